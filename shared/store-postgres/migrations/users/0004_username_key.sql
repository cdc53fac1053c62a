-- Usernames are unique by a key computed in Rust (zx_domain::Username::key: PRECIS
-- UsernameCaseMapped and the UTS #39 confusable skeleton), the same key DynamoDB's guard items
-- use, instead of Postgres's lower(), whose case mapping differs from Rust's. Rows stored before
-- get lower(username) here; `zx-admin migrate` then sets the exact key computed in Rust (and
-- names the look-alikes that clash).
alter table users add column username_key text;
update users set username_key = lower(username);
alter table users alter column username_key set not null;
drop index users_username_key;
create unique index users_username_key on users (username_key);
