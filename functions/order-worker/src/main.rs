//! Lambda function `order-worker`: the order queue's consumer (confirm, cancel), triggered by SQS with partial batch responses.
//! Declared by `zx_app::workers::ORDER_WORKER` (its queue and ports), which the local gateway runs too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    zx_app::run_sqs(&zx_app::workers::ORDER_WORKER).await
}
