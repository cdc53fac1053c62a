-- Sessions (refresh tokens). A session holds the SHA-256 of its one current refresh token;
-- `users.session_epoch` moves on to revoke every session of a user at once.
alter table users add column session_epoch bigint not null default 0 check (session_epoch >= 0);

create table sessions (
    session_id  text        primary key,
    user_id     text        not null references users (user_id) on delete cascade,
    token_hash  text        not null,
    user_epoch  bigint      not null check (user_epoch >= 0),
    created_at  timestamptz not null,
    expires_at  timestamptz not null,
    revoked     boolean     not null default false
);

-- For purging expired sessions.
create index sessions_expires_at on sessions (expires_at);
