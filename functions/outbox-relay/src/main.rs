//! Lambda function `outbox-relay`: on its EventBridge schedule, resends unsent outbox messages
//! and cancels orders pending past `ORDER_PENDING_TIMEOUT`.
//! Its handler is built by `zx_app::workers::outbox_relay`, which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    zx_app::run_scheduled().await
}
