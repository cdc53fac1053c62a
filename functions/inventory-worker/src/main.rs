//! Lambda function `inventory-worker`: the inventory queue's consumer (reserve, release), triggered by SQS with partial batch responses.
//! Declared by `zx_app::workers::INVENTORY_WORKER` (its queue and ports), which the local gateway runs too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    zx_app::run_sqs(&zx_app::workers::INVENTORY_WORKER).await
}
