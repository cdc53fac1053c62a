//! Lambda function `products-list`: GET /api/v1/products.
//! Its handler is built by `zx_app::functions::products_list` (wiring: `zx_app::functions::PRODUCTS_LIST`), which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::PRODUCTS_LIST).await
}
