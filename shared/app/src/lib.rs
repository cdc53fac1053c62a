//! The composition of every function, in dependency order (no module imports one after it):
//!
//! 1. [`config`]: typed configuration from the environment.
//! 2. [`capabilities`]: what a function may do, as IAM sees it ([`capabilities::Needs`]).
//! 3. [`health`]: the dependency checks of `GET /health`.
//! 4. [`backend`]: one cold start's clients, pool and cache ([`Services`]), one adapter per
//!    port on request; with its helpers [`discovery`] (ElastiCache endpoints),
//!    [`http_client`] (the SDK's HTTPS client), [`kms`] (the token signer) and `rds_iam`
//!    (database tokens).
//! 5. [`ports`]: capabilities as types: each port's needs and how it is wired.
//! 6. [`openapi`]: the API description from the operations it is handed.
//! 7. [`functions`] and [`workers`]: each function declared once (routes, access, limit, ports,
//!    handler); its needs follow from its ports' types. The registry.
//! 8. [`runtime`]: the Lambda entry points (`main.rs` calls one).
//! 9. [`permissions`], [`template`], [`admin`]: what is generated from the registry (IAM
//!    statements, the template's function blocks) and the operator's helpers.

pub mod admin;
pub mod backend;
pub mod capabilities;
pub mod config;
pub mod discovery;
pub mod functions;
pub mod health;
pub mod http_client;
pub mod kms;
pub mod openapi;
pub mod permissions;
pub mod ports;
#[cfg(feature = "postgres")]
pub mod rds_iam;
pub mod runtime;
pub mod template;
pub mod workers;

pub use backend::{Services, build_cache};
pub use config::{Config, ConfigError, StoreKind};
pub use health::{HealthCheck, HealthReport, health_handler};
pub use runtime::{run_http, run_scheduled, run_sqs, start};
