-- Products service schema (catalogue and stock). Applied by `zx-admin migrate`.
create table products (
    product_id  text        collate "C" primary key,   -- bytewise order, as DynamoDB sorts
    name        text        not null,
    description text        not null,
    price       bigint      not null check (price >= 0),       -- minor units (fen)
    category_id text        not null,
    images      text[]      not null default '{}',
    available   bigint      not null check (available >= 0),
    reserved    bigint      not null default 0 check (reserved >= 0),
    created_at  timestamptz not null,
    updated_at  timestamptz not null,
    deleted_at  timestamptz,
    version     bigint      not null check (version >= 1)
);

-- Newest first, overall and per category; soft-deleted rows are not indexed.
create index products_newest on products (created_at desc, product_id desc) where deleted_at is null;
create index products_category_newest on products (category_id, created_at desc, product_id desc)
    where deleted_at is null;
