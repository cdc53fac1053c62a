//! Responses and the per-request wrapper: runs a handler, maps its error to problem+json and
//! logs one line with status and latency.

use std::future::Future;
use std::time::{Duration, Instant};

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
    let budget = request_budget(request.lambda_context_ref().map(|c| c.deadline));
    let response = crate::trace::with_trace(
        trace,
        respond(request, handler, started, budget, &lambda_request_id),
    )
    .instrument(span)
    .await;
    // The invocation's metrics, with its ids.
    crate::emf::flush(&lambda_request_id, &trace_id);
    response
}

/// What a function answers by when it has no deadline of its own (the template's `Timeout`).
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);
/// What a request keeps in hand before its invocation's deadline, to answer 503 in time.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(1500);

/// How long the handler may run: until the invocation's deadline (milliseconds since the
/// epoch, from the Lambda context) less [`DEADLINE_MARGIN`], or [`FUNCTION_TIMEOUT`] less it
/// without one. A dependency that hangs (a connection that stopped answering) then gives the
/// client a 503 with `Retry-After` rather than a function timeout, which API Gateway answers
/// as a bare 5xx.
fn request_budget(deadline_ms: Option<u64>) -> Duration {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let left = match deadline_ms {
        Some(deadline) if deadline > now_ms => Duration::from_millis(deadline - now_ms),
        _ => FUNCTION_TIMEOUT,
    };
    left.min(FUNCTION_TIMEOUT * 90)
        .saturating_sub(DEADLINE_MARGIN)
        .max(Duration::from_millis(100))
}

async fn respond<F, Fut>(
    request: Request,
    handler: F,
    started: Instant,
    budget: Duration,
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
    let outcome = tokio::time::timeout(budget, handler(request))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::Unavailable {
                detail: "the request did not finish in time and its outcome is unknown: read \
                         the resource before retrying, or retry with the same Idempotency-Key"
                    .into(),
                retry_after: Duration::from_secs(1),
                source: None,
            })
        });
    let response = match outcome {
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

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn a_request_answers_before_its_invocation_ends() {
        let now_ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        let budget = request_budget(Some(now_ms + 10_000));
        assert!(budget <= Duration::from_millis(8_500) && budget > Duration::from_secs(8));
        assert_eq!(request_budget(None), FUNCTION_TIMEOUT - DEADLINE_MARGIN);
        // A deadline already past (or the local gateway's 0) still leaves the default.
        assert_eq!(request_budget(Some(0)), FUNCTION_TIMEOUT - DEADLINE_MARGIN);
    }

    #[tokio::test]
    async fn a_handler_that_hangs_is_a_503_with_retry_after() {
        let request = Request::default();
        let response = respond(
            request,
            |_| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                json_response(200, &"late")
            },
            Instant::now(),
            Duration::from_millis(50),
            "r",
        )
        .await;
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
