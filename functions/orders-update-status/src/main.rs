//! Lambda function `orders-update-status`: PATCH /api/v1/orders/{id}/status.
//! Declared by `zx_app::functions::ORDERS_UPDATE_STATUS` (routes, access, ports, handler), which the local gateway runs too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::ORDERS_UPDATE_STATUS).await
}
