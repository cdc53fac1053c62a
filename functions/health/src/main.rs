//! Lambda function `health`: GET /health and GET /api/v1/{service}/health.
//! Its handler is built by `zx_app::functions::health` (wiring: `zx_app::functions::HEALTH`), which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::HEALTH).await
}
