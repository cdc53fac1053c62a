//! The local gateway: what `sam local start-api` does, without Docker. It reads the HTTP API
//! routes from `template.yaml`, turns each HTTP request into an API Gateway HTTP API v2 event,
//! invokes the route's function handler in-process (built by the same builder as the deployed
//! function), and logs one line per request. It also polls the saga's queues and runs the
//! relay's schedule, as Lambda event source mappings and EventBridge do ([`pollers`]).

pub mod cors;
pub mod functions;
pub mod pollers;
pub mod routes;
pub mod server;

pub use cors::Cors;
pub use functions::{Functions, InvokeError, StartError};
pub use pollers::{Pollers, QueueSource, Schedule, Workers, sources_from_template};
pub use routes::{Route, RouteTable, TemplateError};
pub use server::{Gateway, GatewayError, MAX_PAYLOAD_BYTES};
