//! Changing one's own e-mail in two steps, so that `PUT /users/{me}` tells nothing about
//! whether an address is registered: the request (with `currentPassword`) answers 202 whether
//! the address is free or taken; a free address gets a one-time code, a taken one's owner gets
//! a notice instead; the change takes effect when the code comes back (`emailCode`).
//!
//! The pending change lives in the cache for [`EMAIL_CHANGE_TTL`] (only the code's SHA-256):
//! like the password checks it comes with, it fails closed (503) when the cache cannot answer,
//! and a pending change the cache loses is asked for again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zx_cache::{Cache, CacheError};
use zx_domain::{
    AccountNotice, Email, Notifier, Timestamp, TokenHash, User, UserId, UserRepository,
};
use zx_http::ApiError;

/// How long a code stays good.
pub const EMAIL_CHANGE_TTL: Duration = Duration::from_secs(3600);

/// Most notices (codes or in-use notices) one address receives in one fixed window of
/// [`EMAIL_CHANGE_TTL`], whoever asks: nobody floods an inbox through us. Past it the request
/// is answered the same (202) and nothing is changed or sent.
pub const NOTICES_PER_ADDRESS: i64 = 3;

/// Most e-mail changes one user asks for in one fixed window of [`EMAIL_CHANGE_TTL`]: one
/// account cannot send notices to many addresses.
pub const REQUESTS_PER_USER: i64 = 5;

/// A change waiting for its code.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    email: String,
    /// SHA-256 of the code, hex.
    code: String,
    /// The user's session epoch when it was asked for: a password change or a revocation
    /// since then voids it.
    epoch: u64,
}

fn pending_key(user: &UserId) -> String {
    format!("email-change:{user}")
}

fn requests_key(user: &UserId) -> String {
    format!("email-change-requests:{user}")
}

fn notices_key(email: &Email) -> String {
    format!("email-notices:{}", email.as_str())
}

fn unavailable(error: CacheError) -> ApiError {
    crate::guard::fail_closed(
        "email_change_unavailable",
        "the pending e-mail change cannot be kept or read",
        "e-mail changes are unavailable for a moment; try again shortly",
        error,
    )
}

fn invalid_code() -> ApiError {
    ApiError::invalid_field(
        "emailCode",
        "is not the code of a pending e-mail change, or it has expired",
    )
}

/// Records a pending change of `user`'s address to `email` and sends the code (or, when the
/// address is another account's, a notice to that account) through `notifier`. Does the same
/// work whatever the address's state: two counts, one lookup, two codes made, one cache write,
/// one notice. Past a limit (per address or per user) nothing is changed or sent, and the
/// answer is the same. Returns when the code expires.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn request(
    users: &dyn UserRepository,
    cache: &Cache,
    notifier: &dyn Notifier,
    user: &User,
    email: Email,
) -> Result<Timestamp, ApiError> {
    let expires_at = Timestamp::now().plus(EMAIL_CHANGE_TTL);
    // Counted first, the same for free and taken addresses; a limited request leaves an
    // earlier pending change (and the code its owner holds) alone.
    let (to_address, _) = cache
        .hit_window(&notices_key(&email), EMAIL_CHANGE_TTL)
        .await
        .map_err(unavailable)?;
    let (by_user, _) = cache
        .hit_window(&requests_key(&user.id), EMAIL_CHANGE_TTL)
        .await
        .map_err(unavailable)?;
    let owner = users.find_by_email(&email).await?;
    let taken = owner.is_some_and(|owner| owner.id != user.id);
    // Two codes either way: a taken address's pending change keeps one nobody holds.
    let (code, hash) = zx_auth::new_one_time_code().map_err(ApiError::internal)?;
    let (_, unheld) = zx_auth::new_one_time_code().map_err(ApiError::internal)?;
    if to_address > NOTICES_PER_ADDRESS || by_user > REQUESTS_PER_USER {
        tracing::warn!(
            event = "email_change_limited",
            to_address,
            by_user,
            "e-mail change asked for too often: nothing changed or sent"
        );
        return Ok(expires_at);
    }
    let pending = Pending {
        email: email.as_str().to_owned(),
        code: if taken { unheld } else { hash }.as_str().to_owned(),
        epoch: user.session_epoch,
    };
    let value = serde_json::to_string(&pending).map_err(ApiError::internal)?;
    cache
        .set_ex(&pending_key(&user.id), &value, EMAIL_CHANGE_TTL)
        .await
        .map_err(unavailable)?;
    let notice = if taken {
        AccountNotice::EmailInUse { to: email }
    } else {
        AccountNotice::EmailChangeCode {
            to: email,
            user: user.id.clone(),
            code,
            expires_at,
        }
    };
    notifier.notify(&notice).await?;
    tracing::info!(
        event = "email_change_requested",
        "an e-mail change awaits its code"
    );
    Ok(expires_at)
}

/// A pending change a code confirmed: its address, and what to clear once it is made.
#[derive(Debug)]
pub struct Confirmed {
    pub email: Email,
    stored: String,
}

/// The pending change a presented `code` confirms for `user`. 400 when there is none, it
/// expired, the code is wrong, or the user's sessions ended since (a password change voids
/// it). Nothing is used up here: a wrong guess costs the owner nothing, and a store failure
/// while the change is made leaves the code good for a retry; see [`used`].
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn confirm(cache: &Cache, user: &User, code: &str) -> Result<Confirmed, ApiError> {
    if code.len() > 64 {
        return Err(invalid_code());
    }
    let stored = cache
        .get(&pending_key(&user.id))
        .await
        .map_err(unavailable)?
        .ok_or_else(invalid_code)?;
    let pending = serde_json::from_str::<Pending>(&stored).map_err(|_| invalid_code())?;
    let kept = TokenHash::from_hex(&pending.code).map_err(|_| invalid_code())?;
    if zx_auth::hash_one_time_code(code) != kept {
        tracing::info!(event = "email_code_refused", "a wrong e-mail change code");
        return Err(invalid_code());
    }
    if pending.epoch != user.session_epoch {
        return Err(invalid_code());
    }
    let email = Email::from_stored(&pending.email).map_err(|_| invalid_code())?;
    Ok(Confirmed { email, stored })
}

/// The change was made: its pending record goes, unless a newer request replaced it. Best
/// effort: the change ended the user's sessions, which voids a record left behind.
pub async fn used(cache: &Cache, user: &UserId, confirmed: &Confirmed) {
    if let Err(error) = cache.delete_if(&pending_key(user), &confirmed.stored).await {
        tracing::warn!(%error, "a used e-mail change record stays until it expires (void)");
    }
}
