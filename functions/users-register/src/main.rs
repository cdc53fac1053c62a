//! Lambda function `users-register`: POST /api/v1/users/register.
//! Its handler is built by `zx_app::functions::users_register` (wiring: `zx_app::functions::USERS_REGISTER`), which the local gateway calls too.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::USERS_REGISTER).await
}
