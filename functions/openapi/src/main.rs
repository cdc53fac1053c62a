//! Lambda function `openapi`: GET /api/v1/openapi.json (the API's OpenAPI 3.1 description).
//! Its handler is built by `zx_app::functions::openapi` (wiring: `zx_app::functions::OPENAPI`), which the local gateway calls too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::OPENAPI).await
}
