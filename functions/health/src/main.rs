//! Lambda function `health`: GET /health and GET /api/v1/{service}/health.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = zx_app::start(false).await?;
    let checks = services.health_checks();
    let (checks, timeout) = (&checks, services.health_timeout);
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| {
            zx_app::health_handler(checks, timeout, request)
        })
    }))
    .await
}
