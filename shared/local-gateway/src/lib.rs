//! The local gateway: what `sam local start-api` does, without Docker. It reads the HTTP API
//! routes from `template.yaml`, turns each HTTP request into an API Gateway HTTP API v2 event,
//! invokes the route's function handler in-process (built by the same builder as the deployed
//! function), and logs one line per request.

pub mod functions;
pub mod routes;
pub mod server;

pub use functions::{Functions, InvokeError, StartError};
pub use routes::{Route, RouteTable, TemplateError};
pub use server::{Gateway, GatewayError, MAX_PAYLOAD_BYTES};
