-- Users service schema. Applied by `zx-admin migrate` into the configured schema (search_path).
create table users (
    user_id       text        primary key,
    username      text        not null,
    email         text        not null,
    password_hash text        not null,
    role          text        not null check (role in ('customer', 'admin')),
    created_at    timestamptz not null,
    updated_at    timestamptz not null,
    version       bigint      not null check (version >= 1),
    constraint users_email_key unique (email)
);

-- Usernames are unique without regard to case.
create unique index users_username_key on users (lower(username));
