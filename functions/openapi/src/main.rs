//! Lambda function `openapi`: GET /api/v1/openapi.json (the API's OpenAPI 3.1 description).
//! Declared by `zx_app::functions::OPENAPI` (routes, access, ports, handler), which the local gateway runs too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::OPENAPI).await
}
