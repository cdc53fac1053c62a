-- The X-Ray trace header of the request or message that wrote an outbox row: sent with the
-- message as its AWSTraceHeader, so the consumer's work joins the order's trace.
alter table outbox add column trace text;
