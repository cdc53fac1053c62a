//! Lambda function `users-get`: GET /api/v1/users/{id}.
//! Its handler is built by `zx_app::functions::users_get` (wiring: `zx_app::functions::USERS_GET`), which the local gateway calls too.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::USERS_GET).await
}
