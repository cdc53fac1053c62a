//! Lambda function `authorizer`: the HTTP API's Lambda authorizer (payload 2.0, simple
//! responses) for every protected route.

use aws_lambda_events::apigw::ApiGatewayV2CustomAuthorizerV2Request;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let tokens = zx_app::start_token_service()?;
    let tokens = &tokens;
    run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2CustomAuthorizerV2Request>| async move {
            Ok::<_, Error>(zx_users::authorize(tokens, &event.payload))
        },
    ))
    .await
}
