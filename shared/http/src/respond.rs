//! Responses and the per-request wrapper: runs a handler, maps its error to problem+json and
//! logs one line with status and latency.

use std::future::Future;
use std::time::Instant;

use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use tracing::Instrument;

use crate::ApiError;

/// A JSON response with `status`.
pub fn json_response<T: Serialize>(status: u16, value: &T) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value).map_err(ApiError::internal)?;
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Binary(body))
        .map_err(ApiError::internal)
}

/// The headers every response carries (OWASP REST Security Cheat Sheet): `nosniff`, HSTS,
/// `X-Frame-Options: DENY`, `Content-Security-Policy: frame-ancestors 'none'` unless the
/// handler set its own policy (the docs page), and `Cache-Control: no-store` unless the
/// handler chose a policy. Responses here carry tokens, profiles, orders or per-client limits:
/// nothing a shared cache should keep, and nothing another site should frame.
pub fn with_security_headers(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        http::header::STRICT_TRANSPORT_SECURITY,
        http::HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        http::HeaderValue::from_static("DENY"),
    );
    headers
        .entry(http::header::CONTENT_SECURITY_POLICY)
        .or_insert(http::HeaderValue::from_static("frame-ancestors 'none'"));
    headers
        .entry(http::header::CACHE_CONTROL)
        .or_insert(http::HeaderValue::from_static("no-store"));
    response
}

/// Runs `handler` for `request`: errors become problem+json, and one log line records the
/// route, status, latency and request ids. Never fails, so Lambda always gets a response.
pub async fn serve<F, Fut>(request: Request, handler: F) -> Response<Body>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let started = Instant::now();
    let (lambda_request_id, trace) = match request.lambda_context_ref() {
        Some(context) => (
            context.request_id.clone(),
            context
                .xray_trace_id
                .as_deref()
                .and_then(crate::trace::TraceHeader::parse),
        ),
        None => (String::new(), None),
    };
    // Every line logged while handling the request carries its trace id (the span's field),
    // and every outbox message it writes carries the header.
    let trace_id = crate::trace::trace_id(trace.as_ref()).to_owned();
    // The client's address on every line of the request too (a replayed refresh token's, a
    // revoked session's), for investigations.
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        source_ip = %crate::client_ip(&request)
    );
    let response = crate::trace::with_trace(
        trace,
        respond(request, handler, started, &lambda_request_id),
    )
    .instrument(span)
    .await;
    // The invocation's metrics, with its ids.
    crate::emf::flush(&lambda_request_id, &trace_id);
    response
}

async fn respond<F, Fut>(
    request: Request,
    handler: F,
    started: Instant,
    lambda_request_id: &str,
) -> Response<Body>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let method = request.method().to_string();
    let source_ip = crate::client_ip(&request).to_owned();
    let (route, request_id) = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => (
            ctx.route_key.clone().unwrap_or_default(),
            ctx.request_id.clone().unwrap_or_default(),
        ),
        _ => (String::new(), String::new()),
    };
    let response = match handler(request).await {
        Ok(response) => response,
        Err(error) => {
            let status = error.status();
            if status >= 500 {
                tracing::error!(error = %error.cause_chain(), status, "request failed");
            } else {
                tracing::info!(error = %error, status, "request rejected");
            }
            let id = if request_id.is_empty() {
                lambda_request_id
            } else {
                &request_id
            };
            error.to_response(id)
        }
    };
    let response = with_security_headers(response);
    tracing::info!(
        http.method = %method,
        http.route = %route,
        http.status = response.status().as_u16(),
        source_ip = %source_ip,
        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
        api_request_id = %request_id,
        lambda_request_id = %lambda_request_id,
        "request"
    );
    response
}
