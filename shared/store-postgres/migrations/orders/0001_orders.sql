-- Orders, their idempotency keys and their outbox: one schema, so an order and its messages
-- are written in one transaction.
create table orders (
    order_id         text collate "C" primary key,
    user_id          text not null,
    status           text not null,
    -- JSON arrays of the lines and of the status history (read and written whole).
    lines            text not null,
    history          text not null,
    total            bigint not null check (total >= 0),
    shipping_address text,
    created_at       timestamptz not null,
    updated_at       timestamptz not null,
    version          bigint not null
);
create index orders_newest on orders (created_at desc, order_id desc);
create index orders_by_user on orders (user_id, created_at desc, order_id desc);
create index orders_by_status on orders (status, created_at desc, order_id desc);

create table idempotency_keys (
    user_id     text not null,
    key         text not null,
    fingerprint text not null,
    order_id    text not null,
    expires_at  timestamptz not null,
    primary key (user_id, key)
);
create index idempotency_keys_expiry on idempotency_keys (expires_at);

create table outbox (
    message_id  text collate "C" primary key,
    order_id    text not null,
    destination text not null,
    body        text not null,
    created_at  timestamptz not null
);
create index outbox_oldest on outbox (created_at);
