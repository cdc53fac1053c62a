//! Per-client rate limits: fixed one-minute windows counted in the cache. When the cache is
//! unavailable the limiter fails open (the request is allowed) and says so in the log.

use std::time::Duration;

use crate::Cache;

/// Per-client limits, per one-minute window, enforced in the cache (when configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Login attempts per client IP and e-mail.
    pub login_per_ip_and_email: u32,
    /// Login attempts per client IP, whatever the e-mail.
    pub login_per_ip: u32,
    /// Registrations per client IP.
    pub register_per_ip: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            login_per_ip_and_email: 5,
            login_per_ip: 30,
            register_per_ip: 10,
        }
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit; the window resets in `retry_after`.
    Limited {
        retry_after: Duration,
    },
}

/// Counts requests per key in fixed windows.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    cache: Cache,
    window: Duration,
}

impl RateLimiter {
    pub const WINDOW: Duration = Duration::from_secs(60);

    pub fn new(cache: Cache) -> Self {
        Self {
            cache,
            window: Self::WINDOW,
        }
    }

    /// Counts one request for `key` and allows it while the window holds at most `limit`.
    pub async fn check(&self, key: &str, limit: u32) -> Decision {
        match self
            .cache
            .hit_window(&format!("rl:{key}"), self.window)
            .await
        {
            Ok((count, reset_in)) if count > i64::from(limit) => Decision::Limited {
                retry_after: Duration::from_secs(reset_in),
            },
            Ok(_) => Decision::Allowed,
            Err(error) => {
                tracing::warn!(%error, "rate limiter unavailable: allowing the request (fail open)");
                Decision::Allowed
            }
        }
    }
}

/// The limiter (absent without a cache: limits are then not enforced) and the limits.
#[derive(Debug, Clone)]
pub struct ClientLimits {
    pub limiter: Option<RateLimiter>,
    pub limits: RateLimits,
}

impl ClientLimits {
    /// Counts one request for `key` against `limit`; allowed when there is no limiter.
    pub async fn check(&self, key: &str, limit: u32) -> Decision {
        match &self.limiter {
            Some(limiter) => limiter.check(key, limit).await,
            None => Decision::Allowed,
        }
    }
}
