//! The HTTP edge shared by every API function: authentication and per-client rate limits
//! ([`Edge`]), request parsing (JSON bodies, path and query parameters), one error type mapped
//! to RFC 9457 problem+json, and the wrapper that logs one line per request.

pub mod auth;
pub mod body;
pub mod edge;
pub mod emf;
pub mod openapi;
pub mod problem;
pub mod respond;
pub mod telemetry;
pub mod trace;

pub use auth::{AuthContext, client_ip};
pub use body::{MAX_BODY_BYTES, json_body, path_param, query_param};
pub use edge::{Access, Edge, HttpHandler, RouteLimit, StandingCheck, run};
pub use problem::ApiError;
pub use respond::{json_response, serve};
pub use telemetry::init_tracing;
