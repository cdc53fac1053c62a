//! Lambda function `stock-put`: PUT /api/v1/stock/{productId}.
//! Its handler is built by `zx_app::functions::stock_put` (wiring: `zx_app::functions::STOCK_PUT`), which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::STOCK_PUT).await
}
