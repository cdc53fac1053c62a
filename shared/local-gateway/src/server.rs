//! The HTTP server, as API Gateway's HTTP API behaves: route by `template.yaml` (unknown path
//! or method → 404 `{"message":"Not Found"}`), refuse payloads over Lambda's 6 MB invocation
//! limit (413), turn the request into a payload 2.0 event, invoke the function through
//! `lambda_http`'s own adapter (event deserialisation and response serialisation as on
//! Lambda), and turn the serialised response back into HTTP as API Gateway does (base64
//! bodies, cookies, multi-value headers).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};

use zx_http::trace::TraceHeader;

use crate::{Functions, Route, RouteTable};

/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Lambda's synchronous invocation payload limit (the HTTP API itself accepts 10 MB).
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

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
        if let Some(route) = routes
            .routes
            .iter()
            .find(|r| functions.handler(&r.function).is_none())
        {
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
                    // A client that never finishes its headers is dropped (slowloris), as a
                    // real front door would.
                    if let Err(error) = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
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
        // Each request starts a trace, as Lambda's active tracing does.
        let trace = TraceHeader::generate();
        let method = request.method().to_string();
        let path = request.uri().path().to_owned();
        let request_headers = request.headers().clone();
        let (mut response, function) = match &self.routes.cors {
            Some(cors) if crate::Cors::is_preflight(request.method(), request.headers()) => {
                let mut response = hyper::Response::new(Full::new(Bytes::new()));
                *response.status_mut() = http::StatusCode::NO_CONTENT;
                *response.headers_mut() = cors.preflight_headers(request.headers());
                (response, None)
            }
            _ => self.dispatch(request, peer, &request_id, &trace).await,
        };
        if let Some(cors) = &self.routes.cors
            && !response
                .headers()
                .contains_key(http::header::ACCESS_CONTROL_ALLOW_ORIGIN)
        {
            cors.decorate(&request_headers, response.headers_mut());
        }
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
            trace_id = zx_http::trace::trace_id(Some(&trace)),
            "gateway request"
        );
        response
    }

    async fn dispatch<'a>(
        &'a self,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
        request_id: &str,
        trace: &TraceHeader,
    ) -> (HttpResponse, Option<&'a str>) {
        let (parts, body) = request.into_parts();
        let Some((route, params)) = self.routes.find(parts.method.as_str(), parts.uri.path())
        else {
            return (plain(404, &json!({ "message": "Not Found" })), None);
        };
        let function = Some(route.function.as_str());
        let Some(body) = read_body(body).await else {
            return (
                plain(413, &json!({ "message": "Request Entity Too Large" })),
                function,
            );
        };
        let event = v2_event(route, &params, &parts, &body, peer, request_id);
        // Lambda's limit applies to the whole event, base64-encoded body included; the
        // function gets the very bytes measured.
        let event = match serde_json::to_vec(&event) {
            Ok(bytes) if bytes.len() <= MAX_PAYLOAD_BYTES => bytes,
            _ => {
                return (
                    plain(413, &json!({ "message": "Request Entity Too Large" })),
                    function,
                );
            }
        };
        match self
            .functions
            .invoke_json(&route.function, &event, request_id, trace)
            .await
        {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                (
                    hyper::Response::from_parts(parts, Full::new(body)),
                    function,
                )
            }
            Err(error) => {
                tracing::error!(%error, function = %route.function, "invocation failed");
                (internal_error(), function)
            }
        }
    }
}

/// The whole body, or `None` when it is larger than [`MAX_PAYLOAD_BYTES`] (or the client
/// broke off). An oversized body is still read to its end (up to 64 MB), so the client gets
/// the 413 instead of a reset connection while it is still sending.
async fn read_body(mut body: Incoming) -> Option<Bytes> {
    const DRAIN_AT_MOST: usize = 64 * 1024 * 1024;
    let mut collected = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.ok()?.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > DRAIN_AT_MOST {
            return None;
        }
        if seen <= MAX_PAYLOAD_BYTES {
            collected.extend_from_slice(&data);
        }
    }
    (seen <= MAX_PAYLOAD_BYTES).then(|| Bytes::from(collected))
}

fn internal_error() -> HttpResponse {
    plain(500, &json!({ "message": "Internal Server Error" }))
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
