-- The hashes of a session's last used refresh tokens (oldest first), to recognise one
-- presented again; and an index for the cascade from users.
alter table sessions add column used_hashes text[] not null default '{}';

create index sessions_user_id on sessions (user_id);
