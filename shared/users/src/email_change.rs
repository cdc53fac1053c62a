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

/// Most notices (codes or in-use notices) one address receives per [`EMAIL_CHANGE_TTL`],
/// whoever asks: nobody can flood an inbox through us. Past it the request is answered the
/// same (202) and nothing is sent.
pub const NOTICES_PER_ADDRESS: i64 = 3;

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
/// work whatever the address's state: one lookup, one cache write, one count, one notice.
/// Returns when the code expires.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn request(
    users: &dyn UserRepository,
    cache: &Cache,
    notifier: &dyn Notifier,
    user: &User,
    email: Email,
) -> Result<Timestamp, ApiError> {
    let owner = users.find_by_email(&email).await?;
    let taken = owner.is_some_and(|owner| owner.id != user.id);
    let (code, hash) = zx_auth::new_one_time_code().map_err(ApiError::internal)?;
    let pending = Pending {
        email: email.as_str().to_owned(),
        // A taken address gets no code: what is kept matches nothing anyone holds.
        code: if taken {
            zx_auth::new_one_time_code()
                .map_err(ApiError::internal)?
                .1
                .as_str()
                .to_owned()
        } else {
            hash.as_str().to_owned()
        },
        epoch: user.session_epoch,
    };
    let value = serde_json::to_string(&pending).map_err(ApiError::internal)?;
    cache
        .set_ex(&pending_key(&user.id), &value, EMAIL_CHANGE_TTL)
        .await
        .map_err(unavailable)?;
    let expires_at = Timestamp::now().plus(EMAIL_CHANGE_TTL);
    let (sent, _) = cache
        .hit_window(&notices_key(&email), EMAIL_CHANGE_TTL)
        .await
        .map_err(unavailable)?;
    if sent > NOTICES_PER_ADDRESS {
        tracing::warn!(
            event = "email_notices_limited",
            "an address asked for too often: nothing sent"
        );
        return Ok(expires_at);
    }
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

/// The address a presented `code` confirms for `user`: the pending change is used up. 400
/// when there is none, it expired, the code is wrong, or the user's sessions ended since
/// (a password change voids it).
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn confirm(cache: &Cache, user: &User, code: &str) -> Result<Email, ApiError> {
    if code.len() > 64 {
        return Err(invalid_code());
    }
    let key = pending_key(&user.id);
    let stored = cache.get(&key).await.map_err(unavailable)?;
    let Some(pending) = stored.and_then(|text| serde_json::from_str::<Pending>(&text).ok()) else {
        return Err(invalid_code());
    };
    let kept = TokenHash::from_hex(&pending.code).map_err(|_| invalid_code())?;
    if zx_auth::hash_one_time_code(code) != kept {
        tracing::info!(event = "email_code_refused", "a wrong e-mail change code");
        return Err(invalid_code());
    }
    cache
        .delete_many(std::slice::from_ref(&key))
        .await
        .map_err(unavailable)?;
    if pending.epoch != user.session_epoch {
        return Err(invalid_code());
    }
    Email::from_stored(&pending.email).map_err(|_| invalid_code())
}
