-- Issue 15: stock apart from the catalogue row, in one or more shards per product (a hot
-- product's reservations spread over several rows), and reservations that say which shard each
-- line was taken from.
create table stock (
    product_id text     collate "C" not null,
    shard      smallint not null check (shard >= 0 and shard < 32),
    available  bigint   not null check (available >= 0 and available <= 1000000000),
    reserved   bigint   not null default 0 check (reserved >= 0),
    -- +1 on every write: the ETag of GET /stock is made of these.
    version    bigint   not null default 1,
    primary key (product_id, shard)
);
insert into stock (product_id, shard, available, reserved)
    select product_id, 0, available, reserved from products;

-- How many shards new reservations use (rows beyond it are retired).
alter table products add column stock_shards smallint not null default 1
    check (stock_shards between 1 and 32);
alter table products drop constraint products_available_max;
alter table products drop column available, drop column reserved;
