//! Per-account guessing limits (OWASP Authentication Cheat Sheet, Keycloak's brute-force
//! detection): wrong passwords are counted per account whatever the client's address, with
//! growing delays and then a temporary lock. Every password check (login, `currentPassword`)
//! counts against the same account. The account is named by its normalised e-mail, whether or
//! not it exists, so a locked unknown e-mail answers exactly as a locked real one.
//!
//! An attempt is counted **before** the password is verified (pessimistically), so a burst of
//! concurrent guesses cannot all slip in before the first failure is recorded: attempts beyond
//! the lock threshold are refused unverified and lock the account. A success clears the count.
//!
//! These limits guard secrets, so they **fail closed**: when the cache cannot answer, the
//! caller gets an error (the HTTP edge answers 503 with `Retry-After`), never an unlimited
//! attempt. They bypass the cache's circuit breaker: one slow reply elsewhere must not refuse
//! every login on the instance for the breaker's 3 s.

use std::time::Duration;

use crate::{Cache, CacheError};

/// When delays start and the lock falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardSettings {
    /// Failures after which each further failure makes the account wait (1 s, 2 s, 4 s, …
    /// up to [`Self::MAX_DELAY`]) before the next attempt (`LOGIN_DELAY_AFTER`, default 3).
    pub delay_after: u32,
    /// Failures that lock the account for `lock_for` (`LOGIN_LOCK_AFTER`, default 10).
    pub lock_after: u32,
    /// How long a lock lasts (`LOGIN_LOCK_SECONDS`, default 900).
    pub lock_for: Duration,
    /// How long failures are remembered after the last one.
    pub remember_for: Duration,
}

impl GuardSettings {
    pub const MAX_DELAY: Duration = Duration::from_secs(60);
}

impl Default for GuardSettings {
    fn default() -> Self {
        Self {
            delay_after: 3,
            lock_after: 10,
            lock_for: Duration::from_secs(900),
            remember_for: Duration::from_secs(3600),
        }
    }
}

/// How long an account must wait after its `failures`-th failure in a row: nothing before
/// `delay_after`, then doubling delays (capped, and never longer than the lock), then the lock.
pub fn wait_after(settings: &GuardSettings, failures: u64) -> Option<Duration> {
    if failures >= u64::from(settings.lock_after) {
        return Some(settings.lock_for);
    }
    let over = failures.checked_sub(u64::from(settings.delay_after))?;
    let delay = Duration::from_secs(1u64 << over.min(16));
    Some(delay.min(GuardSettings::MAX_DELAY).min(settings.lock_for))
}

/// The outcome of asking to check one password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Check it; this is the account's `nth` unresolved attempt (failures in a row plus this).
    Allowed { nth: u64 },
    /// Do not check it: the account is waiting or locked for `retry_after`.
    Refused { retry_after: Duration },
}

/// What a recorded failure did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    Counted {
        failures: u64,
    },
    /// The account must wait `delay` before the next attempt.
    Delayed {
        failures: u64,
        delay: Duration,
    },
    /// The account is locked for `lock_for`.
    Locked {
        failures: u64,
        lock_for: Duration,
    },
}

/// Counts an attempt unless the account is waiting; locks it when the count passes the lock
/// threshold (concurrent guesses beyond the budget). KEYS: count, lock; ARGV: remember ms,
/// lock threshold, lock ms. Returns {nth, 0}, or {0, wait ms} when refused.
const BEGIN: &str = r"
local wait = redis.call('PTTL', KEYS[2])
if wait > 0 then return {0, wait} end
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
if n > tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  redis.call('DEL', KEYS[1])
  return {0, tonumber(ARGV[3])}
end
return {n, 0}
";

/// Makes the account wait at least ARGV[1] ms (a later, shorter delay never shortens a lock);
/// ARGV[2] = 1 also forgets the count (a lock starts the next round afresh).
const WAIT: &str = r"
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
end
if ARGV[2] == '1' then redis.call('DEL', KEYS[1]) end
return 1
";

/// Per-account failure counts and locks, in the cache.
#[derive(Debug, Clone)]
pub struct AccountGuard {
    cache: Cache,
    pub settings: GuardSettings,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl AccountGuard {
    pub fn new(cache: Cache, settings: GuardSettings) -> Self {
        Self { cache, settings }
    }

    /// The account's two keys, with one hash tag so a clustered cache keeps them in one slot.
    fn keys(&self, account: &str) -> (String, String) {
        (
            self.cache.key(&format!("acct:{{{account}}}:failures")),
            self.cache.key(&format!("acct:{{{account}}}:wait")),
        )
    }

    /// Asks to check a password of `account`.
    pub async fn begin(&self, account: &str) -> Result<Attempt, CacheError> {
        let (count, wait) = self.keys(account);
        let mut command = redis::cmd("EVAL");
        command
            .arg(BEGIN)
            .arg(2)
            .arg(count)
            .arg(wait)
            .arg(millis(self.settings.remember_for))
            .arg(self.settings.lock_after)
            .arg(millis(self.settings.lock_for));
        let (nth, wait_ms): (i64, i64) = self.cache.run_always(&command).await?;
        Ok(if nth > 0 {
            Attempt::Allowed {
                nth: u64::try_from(nth).unwrap_or(u64::MAX),
            }
        } else {
            Attempt::Refused {
                retry_after: Duration::from_millis(u64::try_from(wait_ms).unwrap_or(1000)),
            }
        })
    }

    /// Records that the `nth` attempt's password was wrong.
    pub async fn failed(&self, account: &str, nth: u64) -> Result<AfterFailure, CacheError> {
        let Some(delay) = wait_after(&self.settings, nth) else {
            return Ok(AfterFailure::Counted { failures: nth });
        };
        let locks = nth >= u64::from(self.settings.lock_after);
        let (count, wait) = self.keys(account);
        let mut command = redis::cmd("EVAL");
        command
            .arg(WAIT)
            .arg(2)
            .arg(count)
            .arg(wait)
            .arg(millis(delay))
            .arg(if locks { "1" } else { "0" });
        let _: i64 = self.cache.run_always(&command).await?;
        Ok(if locks {
            AfterFailure::Locked {
                failures: nth,
                lock_for: delay,
            }
        } else {
            AfterFailure::Delayed {
                failures: nth,
                delay,
            }
        })
    }

    /// Records a right password: the account's count and any wait are forgotten.
    pub async fn succeeded(&self, account: &str) -> Result<(), CacheError> {
        let (count, wait) = self.keys(account);
        let mut command = redis::cmd("DEL");
        command.arg(count).arg(wait);
        let _: i64 = self.cache.run_always(&command).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_the_lock_falls() {
        let settings = GuardSettings::default();
        let waits: Vec<Option<u64>> = (0..=11)
            .map(|n| wait_after(&settings, n).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            waits,
            [
                None,
                None,
                None,
                Some(1),
                Some(2),
                Some(4),
                Some(8),
                Some(16),
                Some(32),
                Some(60),
                Some(900),
                Some(900)
            ]
        );
        let short = GuardSettings {
            delay_after: 2,
            lock_after: 20,
            lock_for: Duration::from_secs(5),
            ..settings
        };
        // A delay never outlasts the lock, however many failures.
        assert_eq!(wait_after(&short, 19), Some(Duration::from_secs(5)));
        assert_eq!(wait_after(&short, u64::MAX), Some(Duration::from_secs(5)));
    }
}
