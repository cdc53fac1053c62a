-- Stock reservations of orders: the idempotency key of reserve and release.
create table reservations (
    order_id   text primary key,
    state      text not null check (state in ('held', 'released')),
    -- JSON array of {productId, quantity}; empty for a release that came first.
    lines      text not null,
    updated_at timestamptz not null default now()
);
