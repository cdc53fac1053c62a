//! Lambda function `users-register`: POST /api/v1/users/register.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = zx_app::start(false).await?;
    let services = &services;
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| {
            zx_users::register(
                &*services.stores.users,
                &services.hasher,
                &services.limits,
                request,
            )
        })
    }))
    .await
}
