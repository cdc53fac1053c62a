//! Lambda function `products-get`: GET /api/v1/products/{id}.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = zx_app::start(false).await?;
    let products = &*services.stores.products;
    let cache = services.cache.clone().map(zx_products::CatalogueCache::new);
    let cache = cache.as_ref();
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| {
            zx_products::get_product(products, cache, request)
        })
    }))
    .await
}
