-- Issue 15: the relay's scheduled purge deletes finished reservations past their retention in
-- bounded batches; this index finds them without reading the held ones.
create index reservations_finished on reservations (updated_at) where state <> 'held';
