//! Lambda function `users-validate`: GET /api/v1/users/validate.
//! Its handler is built by `zx_app::functions::users_validate` (wiring: `zx_app::functions::USERS_VALIDATE`), which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::USERS_VALIDATE).await
}
