//! Lambda function `stock-put`: PUT /api/v1/stock/{productId}.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = zx_app::start(false).await?;
    let products = &*services.stores.products;
    let cache = services.cache.clone().map(zx_products::CatalogueCache::new);
    let cache = cache.as_ref();
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| {
            zx_products::put_stock(products, cache, request)
        })
    }))
    .await
}
