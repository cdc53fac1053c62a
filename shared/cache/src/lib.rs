//! The Redis-protocol cache (ElastiCache Redis/Valkey): a lazily connected client whose every
//! operation has a short deadline, so a cache that is down or slow costs a request little.
//! Keys carry a prefix, so environments and test runs sharing one server never collide.

use std::time::Duration;

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
        })
    }

    /// The full key for `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }

    /// Runs one command under the deadline.
    pub async fn run<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, CacheError> {
        let mut connection = self.connection.clone();
        tokio::time::timeout(self.timeout, command.query_async(&mut connection))
            .await
            .map_err(|_| CacheError::Timeout(self.timeout))?
            .map_err(CacheError::from)
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
