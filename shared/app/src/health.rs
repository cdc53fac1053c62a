//! Health: every configured dependency checked concurrently under one deadline. 200 when every
//! required dependency answers, 503 (naming the ones that did not) otherwise. The public body
//! names each dependency with its status and latency only; why a check failed goes to the log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use zx_cache::Cache;
use zx_http::{ApiError, json_response};

/// Why a dependency is down (logged, never in the public body).
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("table {table}")]
    Table {
        table: String,
        #[source]
        source: zx_domain::RepositoryError,
    },
    #[error(transparent)]
    Store(#[from] zx_domain::RepositoryError),
    #[error(transparent)]
    Cache(#[from] zx_cache::CacheError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One dependency to check.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    /// Its name in the report (`dynamodb`, `postgres`, `cache`).
    fn name(&self) -> &'static str;
    /// Whether the service is unavailable without it.
    fn required(&self) -> bool;
    /// Succeeds when the dependency answers.
    async fn check(&self) -> Result<(), HealthError>;
}

/// Every table the functions use must answer `DescribeTable`.
pub struct DynamoCheck {
    pub client: aws_sdk_dynamodb::Client,
    pub tables: Vec<String>,
}

#[async_trait]
impl HealthCheck for DynamoCheck {
    fn name(&self) -> &'static str {
        "dynamodb"
    }
    fn required(&self) -> bool {
        true
    }
    async fn check(&self) -> Result<(), HealthError> {
        let pings = self
            .tables
            .iter()
            .map(|table| zx_store_dynamodb::ping(&self.client, table));
        for (table, result) in self
            .tables
            .iter()
            .zip(futures::future::join_all(pings).await)
        {
            result.map_err(|source| HealthError::Table {
                table: table.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
pub struct PostgresCheck {
    pub pool: sqlx::PgPool,
    pub required: bool,
}

#[cfg(feature = "postgres")]
#[async_trait]
impl HealthCheck for PostgresCheck {
    fn name(&self) -> &'static str {
        "postgres"
    }
    fn required(&self) -> bool {
        self.required
    }
    async fn check(&self) -> Result<(), HealthError> {
        Ok(zx_store_postgres::ping(&self.pool).await?)
    }
}

pub struct CacheCheck {
    pub cache: Cache,
}

#[async_trait]
impl HealthCheck for CacheCheck {
    fn name(&self) -> &'static str {
        "cache"
    }
    fn required(&self) -> bool {
        false
    }
    async fn check(&self) -> Result<(), HealthError> {
        Ok(self.cache.ping().await?)
    }
}

/// One dependency's check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DependencyStatus {
    /// `dynamodb`, `postgres`, `cache`.
    pub name: &'static str,
    /// `up` or `down`.
    #[schema(examples("up"))]
    pub status: &'static str,
    /// Decides the overall status; not part of the public body.
    #[serde(skip)]
    pub required: bool,
    pub latency_ms: u64,
}

/// The health of the function's dependencies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// `ok`, or `unavailable` when a required dependency is down.
    pub status: &'static str,
    pub dependencies: Vec<DependencyStatus>,
}

impl HealthReport {
    pub fn is_healthy(&self) -> bool {
        self.status == "ok"
    }
}

/// Runs every check concurrently, each bounded by `timeout`.
pub async fn run_checks(checks: &[Arc<dyn HealthCheck>], timeout: Duration) -> HealthReport {
    let results = futures::future::join_all(checks.iter().map(|check| async move {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(timeout, check.check()).await {
            Ok(result) => result,
            Err(_) => Err(HealthError::Timeout(timeout)),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Err(error) = &outcome {
            let error = zx_domain::cause_chain(error);
            tracing::warn!(dependency = check.name(), %error, latency_ms, "health check failed");
        }
        DependencyStatus {
            name: check.name(),
            status: if outcome.is_ok() { "up" } else { "down" },
            required: check.required(),
            latency_ms,
        }
    }))
    .await;
    let healthy = results.iter().all(|d| d.status == "up" || !d.required);
    HealthReport {
        status: if healthy { "ok" } else { "unavailable" },
        dependencies: results,
    }
}

#[utoipa::path(get, path = "/health", tag = "health",
    responses(
        (status = 200, description = "Every required dependency is up.", body = HealthReport),
        (status = 503, description = "A required dependency is down.", body = HealthReport,
            headers(("retry-after" = u64, description = "Seconds to wait before checking again."))),
    ))]
/// `GET /health`: 200 with each dependency's status and latency, or 503 naming those down.
pub async fn health_handler(
    checks: &[Arc<dyn HealthCheck>],
    timeout: Duration,
    _request: Request,
) -> Result<Response<Body>, ApiError> {
    let report = run_checks(checks, timeout).await;
    let status = if report.is_healthy() { 200 } else { 503 };
    let mut response = json_response(status, &report)?;
    if status == 503 {
        response
            .headers_mut()
            .insert("retry-after", http::HeaderValue::from_static("5"));
    }
    Ok(response)
}
