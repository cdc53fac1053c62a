//! Lambda function `orders-cancel`: POST /api/v1/orders/{id}/cancel.
//! Its handler is built by `zx_app::functions::orders_cancel` (wiring: `zx_app::functions::ORDERS_CANCEL`), which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::ORDERS_CANCEL).await
}
