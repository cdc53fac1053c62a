//! Lambda function `orders-create`: POST /api/v1/orders.
//! Declared by `zx_app::functions::ORDERS_CREATE` (routes, access, ports, handler), which the local gateway runs too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::ORDERS_CREATE).await
}
