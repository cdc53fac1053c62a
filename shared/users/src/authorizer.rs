//! The Lambda authorizer for protected routes (HTTP API, payload 2.0, simple responses):
//! verifies the bearer token and passes `{userId, role}` to the route's function.

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use serde_json::json;
use zx_auth::TokenService;
use zx_auth::token::bearer_token;
use zx_http::AuthContext;

/// Allows the request when its `Authorization: Bearer` token is valid. Never logs the token.
pub fn authorize(
    tokens: &TokenService,
    event: &ApiGatewayV2CustomAuthorizerV2Request,
) -> ApiGatewayV2CustomAuthorizerSimpleResponse {
    let header = event
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            event
                .identity_source
                .as_ref()
                .and_then(|s| s.first())
                .map(String::as_str)
        });
    let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
    let Some(token) = header.and_then(bearer_token) else {
        tracing::info!(
            route = event.route_key.as_deref().unwrap_or(""),
            "denied: no bearer token"
        );
        return response;
    };
    match tokens.verify(token) {
        Ok(claims) => {
            response.is_authorized = true;
            response.context = json!({
                AuthContext::USER_ID: claims.sub,
                AuthContext::ROLE: claims.role.as_str(),
            });
        }
        Err(error) => {
            tracing::info!(route = event.route_key.as_deref().unwrap_or(""), reason = %error_reason(&error), "denied: invalid token");
        }
    }
    response
}

fn error_reason(error: &zx_auth::TokenError) -> String {
    match error {
        zx_auth::TokenError::Rejected(inner) => format!("{:?}", inner.kind()),
        other => other.to_string(),
    }
}
