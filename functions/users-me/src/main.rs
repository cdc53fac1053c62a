//! Lambda function `users-me`: GET /api/v1/users/me.
//! Declared by `zx_app::functions::USERS_ME` (routes, access, ports, handler), which the local gateway runs too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::USERS_ME).await
}
