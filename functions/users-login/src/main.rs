//! Lambda function `users-login`: POST /api/v1/users/login.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let services = zx_app::start(true).await?;
    let (users, hasher, limits) = (&*services.stores.users, &services.hasher, &services.limits);
    let tokens = services.tokens()?;
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| {
            zx_users::login(users, hasher, tokens, limits, request)
        })
    }))
    .await
}
