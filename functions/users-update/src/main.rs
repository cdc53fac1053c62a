//! Lambda function `users-update`: PUT /api/v1/users/{id}.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = zx_app::start(false).await?;
    let services = &services;
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| {
            zx_users::update_user(&*services.stores.users, &services.hasher, request)
        })
    }))
    .await
}
