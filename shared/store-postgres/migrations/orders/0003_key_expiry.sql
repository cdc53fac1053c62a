-- Issue 15: the relay's scheduled purge deletes idempotency keys past their expiry in bounded
-- batches.
create index idempotency_keys_expires_at on idempotency_keys (expires_at);
