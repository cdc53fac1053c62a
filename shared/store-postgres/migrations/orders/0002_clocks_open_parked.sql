-- Issue 15: an order's clock (when its reserve was sent, or when it entered its status), the
-- customers' open-order counts, and parked rows (outbox rows and orders that cannot be read or
-- sent, kept for an operator and never blocking the rows behind them).
alter table orders add column clock_at timestamptz, add column parked_reason text;
-- Existing orders: a pending order's reserve is taken as sent at creation unless it still
-- waits in the outbox; every other order's clock is its last change.
update orders o set clock_at = case
    when o.status <> 'pending' then o.updated_at
    when exists (select 1 from outbox m where m.order_id = o.order_id and m.destination = 'inventory')
        then null
    else o.created_at
end;
create index orders_overdue on orders (status, clock_at)
    where clock_at is not null and parked_reason is null;

create table open_orders (
    user_id text primary key,
    open    integer not null check (open >= 0)
);
insert into open_orders (user_id, open)
    select user_id, count(*) from orders where status in ('pending', 'confirmed') group by user_id;

alter table outbox add column parked_at timestamptz, add column parked_reason text;
drop index outbox_oldest;
create index outbox_unsent on outbox (created_at, message_id) where parked_at is null;
create index outbox_parked on outbox (parked_at) where parked_at is not null;
