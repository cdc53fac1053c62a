//! Lambda function `users-update`: PUT /api/v1/users/{id}.
//! Its handler is built by `zx_app::functions::users_update` (wiring: `zx_app::functions::USERS_UPDATE`), which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::USERS_UPDATE).await
}
