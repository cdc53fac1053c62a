//! Lambda function `authorizer`: the HTTP API's Lambda authorizer (payload 2.0, simple
//! responses) for every protected route.

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    zx_http::init_tracing();
    let config = zx_app::Config::from_env()?;
    let tokens = zx_auth::TokenService::new(config.token_settings().inspect_err(|error| {
        tracing::error!(%error, "refusing to start: invalid configuration");
    })?);
    let tokens = &tokens;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
            Ok::<_, Error>(zx_users::authorize(tokens, &event.payload))
        },
    ))
    .await
}
