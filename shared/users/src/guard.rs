//! The limits that guard passwords, in one place: per-client limits on login and register, and
//! the per-account count of wrong passwords that login and `currentPassword` share. All fail
//! closed: a cache that cannot count answers 503 with `Retry-After`, never an unlimited guess.

use std::time::Duration;

use zx_auth::PasswordHasher;
use zx_cache::{AccountGuard, AfterFailure, Attempt, CacheError, RateLimiter, RateLimits};
use zx_domain::{PasswordHash, UserId};
use zx_http::ApiError;

/// What a 503 from a guard tells the client to wait.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// A 503 with `Retry-After` for a check that fails closed when the cache cannot answer,
/// logged at error as `event` (`what` could not be done).
pub(crate) fn fail_closed(
    event: &'static str,
    what: &'static str,
    detail: &'static str,
    error: CacheError,
) -> ApiError {
    tracing::error!(event, %error, "{what}: refusing (fail closed)");
    ApiError::Unavailable {
        detail: detail.into(),
        retry_after: RETRY_AFTER,
        source: Some(Box::new(error)),
    }
}

fn unavailable(error: CacheError) -> ApiError {
    fail_closed(
        "password_guard_unavailable",
        "password limits cannot be counted",
        "sign-in checks are unavailable for a moment; try again shortly",
        error,
    )
}

/// Who is presenting a password, for the security log (never the password).
#[derive(Debug, Clone, Copy)]
pub struct Presenter<'a> {
    /// `login` or `current_password`.
    pub check: &'static str,
    pub source_ip: &'a str,
    /// The caller's user id, when a token names one.
    pub user_id: Option<&'a UserId>,
}

/// The per-client and per-account limits of password checks.
#[derive(Debug, Clone)]
pub struct PasswordGuard {
    limiter: RateLimiter,
    pub limits: RateLimits,
    accounts: AccountGuard,
}

impl PasswordGuard {
    pub fn new(limiter: RateLimiter, limits: RateLimits, accounts: AccountGuard) -> Self {
        Self {
            limiter,
            limits,
            accounts,
        }
    }

    /// Counts one request against each (key, per-minute limit); 429 when one is exceeded, 503
    /// when the cache cannot count.
    pub async fn per_client(&self, checks: &[(String, u32)]) -> Result<(), ApiError> {
        for (key, limit) in checks {
            let window = self
                .limiter
                .count_closed(key, *limit)
                .await
                .map_err(unavailable)?;
            if window.is_exceeded() {
                tracing::info!(limit = *limit, "rate limited");
                // The limit's name is the key's fixed prefix (`login`, `login-ip`, `register`).
                let group = match key.split(':').next() {
                    Some("login") => "login",
                    Some("login-ip") => "login-ip",
                    _ => "register",
                };
                metrics::counter!(zx_domain::metrics::RATE_LIMITED, "Limit" => group).increment(1);
                return Err(ApiError::TooManyRequests {
                    retry_after: window.reset_in,
                    limit: *limit,
                });
            }
        }
        Ok(())
    }

    /// Whether `password` matches `hash` (`None`: no such account, checked against the dummy
    /// hash), counted against `account` (the normalised e-mail, whether or not it exists).
    /// 429 `too-many-attempts` while the account waits or is locked, without checking; every
    /// failure and lock is logged as a security event.
    pub async fn check(
        &self,
        hasher: &PasswordHasher,
        account: &str,
        presenter: Presenter<'_>,
        password: &str,
        hash: Option<&PasswordHash>,
    ) -> Result<bool, ApiError> {
        let nth = match self.accounts.begin(account).await.map_err(unavailable)? {
            Attempt::Allowed { nth } => nth,
            Attempt::Refused { retry_after } => {
                tracing::warn!(
                    event = "password_refused_locked",
                    check = presenter.check,
                    email = account,
                    source_ip = presenter.source_ip,
                    user_id = presenter.user_id.map(UserId::as_str),
                    retry_after_ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
                    "password not checked: the account is waiting or locked"
                );
                return Err(ApiError::AccountLocked { retry_after });
            }
        };
        if hasher.verify(password, hash).await {
            self.accounts
                .succeeded(account)
                .await
                .map_err(unavailable)?;
            return Ok(true);
        }
        let after = self
            .accounts
            .failed(account, nth)
            .await
            .map_err(unavailable)?;
        let failures = match after {
            AfterFailure::Counted { failures } | AfterFailure::Delayed { failures, .. } => failures,
            AfterFailure::Locked { failures, .. } => failures,
        };
        tracing::warn!(
            event = "password_failed",
            check = presenter.check,
            email = account,
            known = hash.is_some(),
            source_ip = presenter.source_ip,
            user_id = presenter.user_id.map(UserId::as_str),
            failures,
            "wrong password"
        );
        if let AfterFailure::Locked { lock_for, .. } = after {
            tracing::warn!(
                event = "account_locked",
                email = account,
                source_ip = presenter.source_ip,
                failures,
                lock_seconds = lock_for.as_secs(),
                "account locked after repeated wrong passwords"
            );
        }
        Ok(false)
    }
}
