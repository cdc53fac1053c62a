//! The HTTP server: request → API Gateway v2 event → authorizer → function → response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use serde_json::{Map, Value, json};
use zx_http::ApiError;

use crate::{Functions, Route, RouteTable};

/// API Gateway's payload limit for HTTP APIs.
const MAX_PAYLOAD_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("template route {route} names function {function}, which the local gateway cannot run")]
    UnknownFunction { route: String, function: String },
}

pub struct Gateway {
    routes: RouteTable,
    functions: Functions,
}

type HttpResponse = hyper::Response<Full<Bytes>>;

impl Gateway {
    /// Checks every route of the template has a handler.
    pub fn new(routes: RouteTable, functions: Functions) -> Result<Self, GatewayError> {
        if let Some(route) = routes.routes.iter().find(|r| !functions.knows(&r.function)) {
            return Err(GatewayError::UnknownFunction {
                route: route.key(),
                function: route.function.clone(),
            });
        }
        Ok(Self { routes, functions })
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Listens on `addr` (port 0 picks a free one) and serves until the task is dropped.
    pub async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), GatewayError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let local = listener
            .local_addr()
            .map_err(|source| GatewayError::Bind { addr, source })?;
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let gateway = self.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let gateway = gateway.clone();
                        async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
                    });
                    if let Err(error) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(%error, "connection closed with an error");
                    }
                });
            }
        });
        Ok((local, task))
    }

    async fn handle(&self, request: hyper::Request<Incoming>, peer: SocketAddr) -> HttpResponse {
        let started = Instant::now();
        let request_id = uuid::Uuid::new_v4().to_string();
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let (response, function) = self.dispatch(request, peer, &request_id).await;
        let mut response = response;
        if let Ok(value) = http::HeaderValue::from_str(&request_id) {
            response.headers_mut().insert("apigw-requestid", value);
        }
        tracing::info!(
            http.method = %method,
            http.path = %path,
            http.status = response.status().as_u16(),
            function = function.unwrap_or("-"),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = %request_id,
            "gateway request"
        );
        response
    }

    async fn dispatch<'a>(
        &'a self,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
    ) -> (HttpResponse, Option<&'a str>) {
        let (parts, body) = request.into_parts();
        let Some((route, params)) = self.routes.find(parts.method.as_str(), parts.uri.path())
        else {
            let status = if self.routes.path_exists(parts.uri.path()) {
                405
            } else {
                404
            };
            let message = if status == 405 {
                "Method Not Allowed"
            } else {
                "Not Found"
            };
            return (plain(status, &json!({ "message": message })), None);
        };
        let body = match Limited::new(body, MAX_PAYLOAD_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                let problem = ApiError::PayloadTooLarge {
                    limit: MAX_PAYLOAD_BYTES,
                };
                return (
                    convert(problem.to_response(request_id)),
                    Some(&route.function),
                );
            }
        };
        let mut event = v2_event(route, &params, &parts, &body, peer, request_id);
        if route.protected {
            match self.authorize(route, &event) {
                Some(context) => {
                    event["requestContext"]["authorizer"] = json!({ "lambda": context });
                }
                None => {
                    return (
                        convert(ApiError::unauthorized().to_response(request_id)),
                        Some(&route.function),
                    );
                }
            }
        }
        let request = match lambda_http::request::from_str(&event.to_string()) {
            Ok(request) => request,
            Err(error) => {
                return (
                    convert(ApiError::internal(error).to_response(request_id)),
                    Some(&route.function),
                );
            }
        };
        let response = self.functions.invoke_http(&route.function, request).await;
        (convert(response), Some(&route.function))
    }

    /// Runs the authorizer as API Gateway does: no `Authorization` header means 401 without
    /// invoking it; otherwise its simple response decides. Returns the context to pass on.
    fn authorize(&self, route: &Route, event: &Value) -> Option<Value> {
        let authorizer = self.routes.authorizer.as_deref()?;
        let identity = event["headers"]["authorization"].as_str()?.to_owned();
        let mut request = event.clone();
        request["type"] = json!("REQUEST");
        request["identitySource"] = json!([identity]);
        request["routeArn"] = json!(format!(
            "arn:aws:execute-api:us-east-1:000000000000:local/$default/{}{}",
            route.method,
            event["rawPath"].as_str().unwrap_or("")
        ));
        let request = serde_json::from_value(request).ok()?;
        let response = self.functions.invoke_authorizer(authorizer, &request)?;
        response.is_authorized.then_some(response.context)
    }
}

/// The API Gateway HTTP API payload 2.0 event for a request.
fn v2_event(
    route: &Route,
    params: &[(String, String)],
    parts: &http::request::Parts,
    body: &Bytes,
    peer: SocketAddr,
    request_id: &str,
) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == http::header::COOKIE {
            cookies.extend(value.split(';').map(|c| json!(c.trim())));
            continue;
        }
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), json!(value));
            }
        }
    }
    let raw_query = parts.uri.query().unwrap_or("");
    let mut query = Map::new();
    for (key, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        match query.get_mut(key.as_ref()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                query.insert(key.into_owned(), json!(value));
            }
        }
    }
    let path_parameters: Map<String, Value> =
        params.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let (body, encoded) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (Value::Null, false),
        Ok(text) => (json!(text), false),
        Err(_) => (
            json!(base64::engine::general_purpose::STANDARD.encode(body)),
            true,
        ),
    };
    let now = time::OffsetDateTime::now_utc();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    json!({
        "version": "2.0",
        "routeKey": route.key(),
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "cookies": cookies,
        "headers": headers,
        "queryStringParameters": query,
        "pathParameters": path_parameters,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": "local",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": peer.ip().to_string(),
                "userAgent": parts.headers.get(http::header::USER_AGENT).and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": request_id,
            "routeKey": route.key(),
            "stage": "$default",
            "time": now.to_string(),
            "timeEpoch": i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        },
        "body": body,
        "isBase64Encoded": encoded,
    })
}

fn plain(status: u16, body: &Value) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn convert(response: lambda_http::Response<Body>) -> HttpResponse {
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(data) => Bytes::from(data),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}
