-- Idempotent stock changes and the stock bound. Applied by `zx-admin migrate`.

-- One row per applied stock change: a retried change (same id) finds its row and changes
-- nothing. Rows older than a day may be deleted (see docs/decisions.md).
create table stock_changes (
    change_id  text        collate "C" primary key,
    product_id text        not null,
    applied_at timestamptz not null default now()
);
create index stock_changes_applied_at on stock_changes (applied_at);

-- Available stock stays within 0..=1,000,000,000 (Stock::MAX_UNITS); NOT VALID leaves rows
-- written before the bound existed alone, while every new write is checked.
alter table products add constraint products_available_max check (available <= 1000000000) not valid;
