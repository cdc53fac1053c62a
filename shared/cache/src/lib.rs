//! The Redis-protocol cache (ElastiCache Redis/Valkey): a lazily connected client whose every
//! operation has a short deadline, so a cache that is down or slow costs a request little.
//! Keys carry a prefix, so environments and test runs sharing one server never collide.
//! After a failure the cache is skipped for a short while (a circuit breaker), so a cache that
//! is down costs one timeout every few seconds, not one per operation.

pub mod guard;
pub mod rate_limit;

pub use guard::{AccountGuard, AfterFailure, Attempt, GuardSettings};
pub use rate_limit::{ClientLimits, Decision, RateLimiter, RateLimits, Window};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Client;
use redis::aio::ConnectionManager;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache URL is invalid (expected redis:// or rediss://)")]
    InvalidUrl(#[source] redis::RedisError),
    #[error("cache operation timed out after {0:?}")]
    Timeout(Duration),
    #[error("cache operation failed")]
    Redis(#[from] redis::RedisError),
    #[error("cache skipped for a moment after a recent failure")]
    Skipped,
}

/// How long the cache is skipped after a failure.
const BREAK_FOR: Duration = Duration::from_secs(3);

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `redis://host:port` or `rediss://host:port` (TLS).
    pub url: String,
    /// Deadline for one operation, connecting included.
    pub timeout: Duration,
    /// Prepended to every key.
    pub key_prefix: String,
}

/// A cache handle; cheap to clone, connects on first use and reconnects after failures.
#[derive(Clone)]
pub struct Cache {
    connection: ConnectionManager,
    timeout: Duration,
    key_prefix: String,
    /// Unix millis until which operations fail fast with [`CacheError::Skipped`].
    broken_until: Arc<AtomicU64>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Builds the client without any I/O (must run inside the Tokio runtime).
    pub fn new(settings: CacheSettings) -> Result<Self, CacheError> {
        let client = Client::open(settings.url.as_str()).map_err(CacheError::InvalidUrl)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(100));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            connection,
            timeout: settings.timeout,
            key_prefix: settings.key_prefix,
            broken_until: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The full key for `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// Runs one command under the deadline; fails fast while the breaker is open.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, CacheError> {
        self.guarded(|mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Runs one command under the deadline even while the breaker is open: for the limits that
    /// guard passwords, which fail closed and so must not be refused by another call's failure.
    pub async fn run_always<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, CacheError> {
        self.attempt(|mut connection| async move { command.query_async(&mut connection).await })
            .await
    }

    /// Runs a pipeline (atomically when built with `.atomic()`) under the deadline.
    pub async fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, CacheError> {
        self.guarded(|mut connection| async move { pipeline.query_async(&mut connection).await })
            .await
    }

    /// Runs a pipeline under the deadline even while the breaker is open: for writes that must
    /// not be skipped silently (invalidations).
    pub async fn run_pipeline_always<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Result<T, CacheError> {
        self.attempt(|mut connection| async move { pipeline.query_async(&mut connection).await })
            .await
    }

    async fn guarded<T, F, Fut>(&self, operation: F) -> Result<T, CacheError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if now_millis() < self.broken_until.load(Ordering::Relaxed) {
            return Err(CacheError::Skipped);
        }
        self.attempt(operation).await
    }

    /// One operation under the deadline; a failure opens the breaker. A connection error is
    /// tried once more within the same deadline: after an outage the connection manager hands
    /// the first command the failure of its last reconnect and only then reconnects (redis
    /// 1.8, `reconnect_if_io_error!`), and that first command is often an invalidation, since
    /// the breaker skipped the reads in between.
    async fn attempt<T, F, Fut>(&self, operation: F) -> Result<T, CacheError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let tries = async {
            match operation(self.connection.clone()).await {
                Err(error)
                    if error.is_io_error()
                        || error.is_connection_dropped()
                        || error.is_unrecoverable_error() =>
                {
                    tracing::debug!(%error, "cache connection error; trying once more");
                    operation(self.connection.clone()).await
                }
                outcome => outcome,
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, tries).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => CacheError::Redis(error),
            Err(_) => CacheError::Timeout(self.timeout),
        };
        let until =
            now_millis().saturating_add(u64::try_from(BREAK_FOR.as_millis()).unwrap_or(u64::MAX));
        self.broken_until.store(until, Ordering::Relaxed);
        Err(outcome)
    }

    /// `GET` of a prefixed key.
    pub async fn get(&self, key: &str) -> Result<Option<String>, CacheError> {
        self.run(redis::cmd("GET").arg(self.key(key))).await
    }

    /// `SET key value EX ttl` of a prefixed key.
    pub async fn set_ex(&self, key: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        self.run(
            redis::cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("EX")
                .arg(ttl.as_secs().max(1)),
        )
        .await
    }

    /// `MGET` of prefixed keys: one value (or none) per key, in order.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, CacheError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut command = redis::cmd("MGET");
        for key in keys {
            command.arg(self.key(key));
        }
        self.run(&command).await
    }

    /// `SET key value EX ttl` for each pair, in one round trip.
    pub async fn set_many_ex(
        &self,
        entries: &[(String, String)],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for (key, value) in entries {
            pipeline
                .cmd("SET")
                .arg(self.key(key))
                .arg(value)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .ignore();
        }
        self.run_pipeline::<()>(&pipeline).await
    }

    /// `DEL` of a prefixed key only while it still holds `expected` (one script, so a newer
    /// value written meanwhile stays): whether it was deleted.
    pub async fn delete_if(&self, key: &str, expected: &str) -> Result<bool, CacheError> {
        const SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
            return redis.call('DEL', KEYS[1]) else return 0 end";
        let deleted: i64 = self
            .run(
                redis::cmd("EVAL")
                    .arg(SCRIPT)
                    .arg(1)
                    .arg(self.key(key))
                    .arg(expected),
            )
            .await?;
        Ok(deleted == 1)
    }

    /// `DEL` of prefixed keys, attempted even while the breaker is open (clearing a mark must
    /// never be skipped).
    pub async fn delete_many(&self, keys: &[String]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut pipeline = redis::pipe();
        for key in keys {
            pipeline.cmd("DEL").arg(self.key(key)).ignore();
        }
        self.run_pipeline_always::<()>(&pipeline).await
    }

    /// `INCR` of several prefixed keys and `SET` of others to `value`, in one transaction,
    /// attempted even while the breaker is open (an invalidation must never be skipped).
    pub async fn bump(&self, counters: &[&str], stamps: &[(&str, i64)]) -> Result<(), CacheError> {
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        for key in counters {
            pipeline.cmd("INCR").arg(self.key(key)).ignore();
        }
        for (key, value) in stamps {
            pipeline.cmd("SET").arg(self.key(key)).arg(*value).ignore();
        }
        self.run_pipeline_always::<()>(&pipeline).await
    }

    /// Counts one hit in a fixed window: `INCR` and, for the first hit, `EXPIRE window`, in one
    /// transaction. Returns the count so far and the seconds until the window resets.
    pub async fn hit_window(&self, key: &str, window: Duration) -> Result<(i64, u64), CacheError> {
        self.hit_window_with(key, window, false).await
    }

    /// [`Self::hit_window`], attempted even while the breaker is open (`always`).
    pub async fn hit_window_with(
        &self,
        key: &str,
        window: Duration,
        always: bool,
    ) -> Result<(i64, u64), CacheError> {
        let key = self.key(key);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .cmd("INCR")
            .arg(&key)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window.as_secs().max(1))
            .arg("NX")
            .ignore()
            .cmd("TTL")
            .arg(&key);
        let (count, ttl): (i64, i64) = if always {
            self.run_pipeline_always(&pipeline).await?
        } else {
            self.run_pipeline(&pipeline).await?
        };
        Ok((count, u64::try_from(ttl).unwrap_or(window.as_secs()).max(1)))
    }

    /// `PING`, for health checks.
    pub async fn ping(&self) -> Result<(), CacheError> {
        let reply: String = self.run(&redis::cmd("PING")).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(CacheError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected PING reply",
            ))))
        }
    }
}
