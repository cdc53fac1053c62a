//! The function registry: each binary name of `template.yaml` mapped to the handler its own
//! builder (`zx_app::functions`) makes, the same builder its `main.rs` calls, so the gateway
//! runs exactly the deployed code. Handlers are built once, as at a cold start.

use std::collections::HashMap;
use std::convert::Infallible;

use base64::Engine;
use bytes::Bytes;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::{Service, ServiceExt};
use lambda_http::{Adapter, Request};
use serde_json::Value;
use zx_app::{ConfigError, Services};
use zx_http::HttpHandler;
use zx_http::trace::TraceHeader;

/// Why an invocation produced no response (a bug in the event or the function's response).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the function is not known")]
    UnknownFunction,
    #[error("the event or the response is not valid JSON for Lambda")]
    Json(#[from] serde_json::Error),
    #[error("the function's response is invalid: {0}")]
    Response(String),
}

/// Every HTTP function the gateway can invoke, built.
pub struct Functions {
    handlers: HashMap<&'static str, HttpHandler>,
}

#[derive(Debug, thiserror::Error)]
#[error("function {function} refused to start")]
pub struct StartError {
    pub function: &'static str,
    #[source]
    pub source: ConfigError,
}

impl Functions {
    /// Builds every function's handler from `services` (one cold start each).
    pub fn new(services: &Services) -> Result<Self, StartError> {
        let handlers = zx_app::functions::HTTP_FUNCTIONS
            .iter()
            .map(|function| {
                // Each function's ports, as deployed: its handler cannot reach anything else.
                (function.build)(services)
                    .map(|handler| (function.name, handler))
                    .map_err(|source| StartError {
                        function: function.name,
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { handlers })
    }

    /// The handler of `binary`, if the gateway knows it.
    pub fn handler(&self, binary: &str) -> Option<&HttpHandler> {
        self.handlers.get(binary)
    }

    /// Invokes `binary` with an API Gateway payload 2.0 `event`, as Lambda and API Gateway do,
    /// and returns the HTTP response a client would get.
    pub async fn invoke(
        &self,
        binary: &str,
        event: Value,
        request_id: &str,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        let handler = self.handler(binary).ok_or(InvokeError::UnknownFunction)?;
        let trace = TraceHeader::generate();
        invoke(handler, serde_json::from_value(event)?, request_id, &trace).await
    }

    /// [`Functions::invoke`] with the event as the JSON bytes Lambda would receive, in the
    /// trace `trace` (Lambda's `_X_AMZN_TRACE_ID`).
    pub async fn invoke_json(
        &self,
        binary: &str,
        event: &[u8],
        request_id: &str,
        trace: &TraceHeader,
    ) -> Result<http::Response<Bytes>, InvokeError> {
        let handler = self.handler(binary).ok_or(InvokeError::UnknownFunction)?;
        invoke(handler, serde_json::from_slice(event)?, request_id, trace).await
    }
}

/// Invokes `handler` as the Lambda runtime does: the event is deserialised into a
/// `LambdaRequest`, run through `lambda_http`'s adapter, and the `LambdaResponse` serialised;
/// then API Gateway's side turns that JSON into an HTTP response.
async fn invoke(
    handler: &HttpHandler,
    payload: LambdaRequest,
    request_id: &str,
    trace: &TraceHeader,
) -> Result<http::Response<Bytes>, InvokeError> {
    let mut context = Context::default();
    context.request_id = format!("local-{request_id}");
    context.xray_trace_id = Some(trace.as_str().to_owned());
    // The template's function timeout, as Lambda gives each invocation its deadline.
    context.deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
        .saturating_add(u64::try_from(zx_http::respond::FUNCTION_TIMEOUT.as_millis()).unwrap_or(0));
    let handler = handler.clone();
    let service = lambda_http::service_fn(move |request: Request| {
        let response = handler(request);
        async move { Ok::<_, Infallible>(response.await) }
    });
    let mut adapter = Adapter::from(service);
    let ready = match adapter.ready().await {
        Ok(ready) => ready,
        Err(never) => match never {},
    };
    let response = match ready.call(LambdaEvent::new(payload, context)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let serialised = serde_json::to_value(&response)?;
    from_lambda_response(&serialised).map_err(InvokeError::Response)
}

/// What API Gateway (payload 2.0) does with a function's response: status, headers (and
/// multi-value headers, joined with commas), cookies as `Set-Cookie`, and the body (decoded
/// when `isBase64Encoded`).
fn from_lambda_response(value: &Value) -> Result<http::Response<Bytes>, String> {
    let status = value["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .ok_or("the function's response has no valid statusCode")?;
    let text = value["body"].as_str().unwrap_or("");
    let body = if value["isBase64Encoded"].as_bool().unwrap_or(false) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "the function's base64 body does not decode")?
    } else {
        text.as_bytes().to_vec()
    };
    let mut response = http::Response::new(Bytes::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let mut add = |name: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    };
    if let Some(map) = value["multiValueHeaders"].as_object() {
        for (name, values) in map {
            let joined: Vec<&str> = values
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            add(name, &joined.join(","));
        }
    }
    if let Some(map) = value["headers"].as_object() {
        for (name, single) in map {
            if value["multiValueHeaders"].get(name).is_none()
                && let Some(single) = single.as_str()
            {
                add(name, single);
            }
        }
    }
    for cookie in value["cookies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        add("set-cookie", cookie);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lambda_http::{Body, Response};
    use serde_json::json;

    use super::*;

    fn event(body: &str) -> Value {
        json!({
            "version": "2.0",
            "routeKey": "POST /echo",
            "rawPath": "/echo",
            "rawQueryString": "",
            "headers": {"content-type": "application/json"},
            "requestContext": {
                "accountId": "000000000000", "apiId": "local", "domainName": "localhost",
                "domainPrefix": "local", "requestId": "r-1", "routeKey": "POST /echo",
                "stage": "$default", "time": "25/Nov/2026:08:00:00 +0000", "timeEpoch": 0,
                "http": {"method": "POST", "path": "/echo", "protocol": "HTTP/1.1",
                         "sourceIp": "127.0.0.1", "userAgent": "test"}
            },
            "body": body,
            "isBase64Encoded": false
        })
    }

    /// A function answering with a binary body, two cookies and a repeated header.
    fn binary_function() -> HttpHandler {
        Arc::new(|_request| {
            Box::pin(async {
                Response::builder()
                    .status(201)
                    .header("content-type", "application/octet-stream")
                    .header("set-cookie", "a=1; Secure")
                    .header("set-cookie", "b=2; HttpOnly")
                    .header("vary", "origin")
                    .header("vary", "accept")
                    .body(Body::Binary(vec![0, 159, 146, 150, 255]))
                    .unwrap_or_default()
            })
        })
    }

    #[tokio::test]
    async fn responses_go_through_lambda_http_serialisation_as_aws_receives_them() {
        let event = serde_json::from_value(event("{}")).unwrap();
        let response = invoke(&binary_function(), event, "r-1", &TraceHeader::generate())
            .await
            .unwrap();

        assert_eq!(response.status(), 201);
        assert_eq!(response.body().as_ref(), [0, 159, 146, 150, 255]);
        let cookies: Vec<_> = response.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Secure", "b=2; HttpOnly"]);
        // lambda_http 1.3 serialises payload 2.0 `headers` one value per name: a repeated
        // header other than Set-Cookie reaches AWS with its first value only. Handlers must
        // join such values themselves.
        let vary: Vec<_> = response.headers().get_all("vary").iter().collect();
        assert_eq!(vary, ["origin"]);
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
    }

    #[test]
    fn api_gateway_turns_lambda_json_into_http() {
        let response = from_lambda_response(&json!({
            "statusCode": 200,
            "headers": {"x-one": "1", "x-many": "ignored"},
            "multiValueHeaders": {"x-many": ["a", "b"]},
            "cookies": ["c=3"],
            "body": "aGVsbG8=",
            "isBase64Encoded": true
        }))
        .unwrap();
        assert_eq!(response.body().as_ref(), b"hello");
        assert_eq!(response.headers()["x-one"], "1");
        assert_eq!(response.headers()["x-many"], "a,b");
        assert_eq!(response.headers()["set-cookie"], "c=3");

        for broken in [
            json!({"body": "no status"}),
            json!({"statusCode": 99}),
            json!({"statusCode": 200, "body": "%%%", "isBase64Encoded": true}),
        ] {
            assert!(from_lambda_response(&broken).is_err(), "{broken}");
        }
    }
}
