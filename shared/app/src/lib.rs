//! Wiring shared by every function: typed configuration, building the store, cache and
//! credential services once per cold start, and the health checks.

pub mod config;
pub mod discovery;
pub mod health;
pub mod wiring;

pub use config::{Config, ConfigError, StoreKind};
pub use health::{HealthCheck, HealthReport, health_handler};
pub use wiring::{Services, Stores, build_cache, build_stores, start, start_token_service};
