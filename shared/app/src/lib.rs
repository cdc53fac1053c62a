//! Wiring shared by every function: typed configuration, building the store, cache and
//! credential services once per cold start, each function's handler (one builder per function,
//! called by its `main.rs` and by the local gateway alike), and the health checks.

pub mod admin;
pub mod config;
pub mod discovery;
pub mod functions;
pub mod health;
pub mod http_client;
pub mod kms;
pub mod openapi;
pub mod permissions;
#[cfg(feature = "postgres")]
pub mod rds_iam;
pub mod template;
pub mod unwired;
pub mod wiring;
pub mod workers;

pub use config::{Config, ConfigError, StoreKind};
pub use health::{HealthCheck, HealthReport, health_handler};
pub use wiring::{Services, Stores, build_cache, build_stores, run_http, start};
pub use workers::{run_scheduled, run_sqs};
