-- What each stock change did, so an idempotency key reused for another change is refused
-- (409) instead of being taken for a retry. Applied by `zx-admin migrate`.
alter table stock_changes add column change text;
