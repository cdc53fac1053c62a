//! Lambda function `docs`: GET /docs and GET /docs/{file} (the API docs page and its assets).
//! Declared by `zx_app::functions::DOCS` (routes, access, ports, handler), which the local gateway runs too.

// One invocation at a time per instance: one thread, no worker pool to start.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    zx_app::run_http(&zx_app::functions::DOCS).await
}
