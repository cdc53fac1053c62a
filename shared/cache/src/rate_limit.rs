//! Per-client rate limits: fixed one-minute windows counted in the cache (like Kong's
//! `rate-limiting` plugin with `policy: redis`). When the cache is unavailable a route limit
//! fails open (the request is allowed), logged at error and counted (event
//! `rate_limit_fail_open`, a metric filter in the template); the limits that guard passwords
//! ([`RateLimiter::count_closed`]) fail closed instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{Cache, CacheError};

/// Route-limit fail-opens in this process (the log line is the deployed metric's source).
static FAIL_OPENS: AtomicU64 = AtomicU64::new(0);

/// How many requests this process let through unlimited because the cache could not count them.
pub fn fail_opens() -> u64 {
    FAIL_OPENS.load(Ordering::Relaxed)
}

/// Per-client limits, per one-minute window, enforced in the cache (when configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Requests to users routes per client (the seed's Kong limit: 100/min).
    pub users_per_client: u32,
    /// Requests to products and stock routes per client (seed: 1000/min).
    pub products_per_client: u32,
    /// Requests to orders routes per client (seed: 500/min).
    pub orders_per_client: u32,
    /// Login attempts per client IP and e-mail.
    pub login_per_ip_and_email: u32,
    /// Login attempts per client IP, whatever the e-mail.
    pub login_per_ip: u32,
    /// Registrations per client IP.
    pub register_per_ip: u32,
    /// Product searches (`search`) per client, stricter than the products routes' limit.
    pub search_per_client: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            users_per_client: 100,
            products_per_client: 1000,
            orders_per_client: 500,
            login_per_ip_and_email: 5,
            login_per_ip: 30,
            register_per_ip: 10,
            search_per_client: 60,
        }
    }
}

/// One client's window after counting a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub limit: u32,
    /// Requests counted in this window, this one included.
    pub count: u64,
    /// Until the window resets.
    pub reset_in: Duration,
}

impl Window {
    pub fn is_exceeded(&self) -> bool {
        self.count > u64::from(self.limit)
    }

    /// Requests left in this window (0 once exceeded).
    pub fn remaining(&self) -> u64 {
        u64::from(self.limit).saturating_sub(self.count)
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

    /// Counts one request for `key` in its window; `None` when the cache cannot be asked (the
    /// request is then allowed: fail open, logged).
    pub async fn count(&self, key: &str, limit: u32) -> Option<Window> {
        match self
            .cache
            .hit_window(&format!("rl:{key}"), self.window)
            .await
        {
            Ok((count, reset_in)) => Some(Window {
                limit,
                count: u64::try_from(count).unwrap_or(0),
                reset_in: Duration::from_secs(reset_in),
            }),
            Err(error) => {
                FAIL_OPENS.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(zx_domain::metrics::RATE_LIMIT_FAIL_OPENS).increment(1);
                tracing::error!(
                    event = "rate_limit_fail_open",
                    limit_key = key.split(':').next().unwrap_or_default(),
                    %error,
                    "rate limiter unavailable: allowing the request (fail open)"
                );
                None
            }
        }
    }

    /// Counts one request for `key` for a limit that guards a secret: attempted even while the
    /// cache's breaker is open, and an error (never an unlimited request) when the cache cannot
    /// count it.
    pub async fn count_closed(&self, key: &str, limit: u32) -> Result<Window, CacheError> {
        let (count, reset_in) = self
            .cache
            .hit_window_with(&format!("rl:{key}"), self.window, true)
            .await?;
        Ok(Window {
            limit,
            count: u64::try_from(count).unwrap_or(0),
            reset_in: Duration::from_secs(reset_in),
        })
    }

    /// The cache the limiter counts in.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Counts one request for `key` and allows it while the window holds at most `limit`.
    pub async fn check(&self, key: &str, limit: u32) -> Decision {
        match self.count(key, limit).await {
            Some(window) if window.is_exceeded() => Decision::Limited {
                retry_after: window.reset_in,
            },
            _ => Decision::Allowed,
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
