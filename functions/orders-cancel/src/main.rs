//! Lambda function `orders-cancel`: POST /api/v1/orders/{id}/cancel.
//! Its handler is built by `zx_app::functions::orders_cancel` (wiring: `zx_app::functions::ORDERS_CANCEL`), which the local gateway calls too.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::ORDERS_CANCEL).await
}
