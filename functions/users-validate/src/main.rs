//! Lambda function `users-validate`: GET /api/v1/users/validate.

use lambda_http::{Error, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let tokens = zx_app::start_token_service()?;
    let tokens = &tokens;
    run(service_fn(move |request| {
        zx_http::serve(request, move |request| zx_users::validate(tokens, request))
    }))
    .await
}
