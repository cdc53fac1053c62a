//! Lambda function `stock-get`: GET /api/v1/stock/{productId}.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = zx_app::start(false).await?;
    let products = &*services.stores.products;
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| {
            zx_products::get_stock(products, request)
        })
    }))
    .await
}
