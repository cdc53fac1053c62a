//! The standing of an access token's session, for the edge's check on admin routes and writes
//! ([`zx_http::StandingCheck`]): read from the store and kept in the cache for
//! [`STANDING_TTL`], under two keys, one per session and one per user, so that what changes
//! it can forget it at once: a logout or a replayed refresh token forgets the session's, a
//! password, e-mail or role change forgets the user's.
//!
//! The bound: a change takes effect on the next request. It can take up to [`STANDING_TTL`]
//! when the forgetting was lost (the cache unreachable at that moment, back before the entry
//! expired) or raced with a read that refilled the entry with what it read just before the
//! change. Without a cache every check reads the store.

use std::sync::Arc;
use std::time::Duration;

use zx_cache::Cache;
use zx_domain::{Role, SessionId, Standing, StandingReader, UserId};
use zx_http::{ApiError, AuthContext, StandingCheck};

/// How long a standing is cached: the bound on a change that was not forgotten in the cache.
pub const STANDING_TTL: Duration = Duration::from_secs(30);

fn session_key(id: &SessionId) -> String {
    format!("standing:s:{id}")
}

fn user_key(id: &UserId) -> String {
    format!("standing:u:{id}")
}

/// Forgets the cached standing of a session (logout, a replayed refresh token).
pub async fn forget_session(cache: Option<&Cache>, id: &SessionId) {
    if let Some(cache) = cache
        && let Err(error) = cache.delete_many(&[session_key(id)]).await
    {
        tracing::warn!(%error, session_id = %id, "could not forget a session's standing: it may stand for up to 30 s");
    }
}

/// Forgets the cached standing of every session of a user (its epoch or role changed).
pub async fn forget_user(cache: Option<&Cache>, id: &UserId) {
    if let Some(cache) = cache
        && let Err(error) = cache.delete_many(&[user_key(id)]).await
    {
        tracing::warn!(%error, user_id = %id, "could not forget a user's standing: old tokens may act for up to 30 s");
    }
}

/// The session half and the user half of a standing, as cached.
fn encode(standing: &Standing) -> (String, String) {
    (
        format!(
            "{} {} {}",
            standing.user_id,
            standing.session_epoch,
            u8::from(standing.revoked)
        ),
        format!("{} {}", standing.user_epoch, standing.role.as_str()),
    )
}

fn decode(session: &str, user: &str) -> Option<Standing> {
    let mut s = session.split(' ');
    let (user_id, session_epoch, revoked) = (s.next()?, s.next()?, s.next()?);
    let mut u = user.split(' ');
    let (user_epoch, role) = (u.next()?, u.next()?);
    Some(Standing {
        user_id: UserId::parse(user_id).ok()?,
        session_epoch: session_epoch.parse().ok()?,
        revoked: revoked == "1",
        user_epoch: user_epoch.parse().ok()?,
        role: Role::parse(role).ok()?,
    })
}

/// Reads standings through the cache.
pub struct SessionStanding {
    sessions: Arc<dyn StandingReader>,
    cache: Option<Cache>,
}

impl SessionStanding {
    pub fn new(sessions: Arc<dyn StandingReader>, cache: Option<Cache>) -> Self {
        Self { sessions, cache }
    }

    async fn standing(&self, id: &SessionId, user: &UserId) -> Result<Option<Standing>, ApiError> {
        let keys = [session_key(id), user_key(user)];
        if let Some(cache) = &self.cache
            && let Ok(values) = cache.get_many(&keys).await
            && let [Some(session), Some(user_half)] = values.as_slice()
            && let Some(standing) = decode(session, user_half)
        {
            return Ok(Some(standing));
        }
        let standing = self.sessions.find_standing(id, user).await?;
        if let (Some(cache), Some(standing)) = (&self.cache, &standing) {
            let (session, user_half) = encode(standing);
            let entries = [(keys[0].clone(), session), (keys[1].clone(), user_half)];
            if let Err(error) = cache.set_many_ex(&entries, STANDING_TTL).await {
                tracing::debug!(%error, "standing not cached");
            }
        }
        Ok(standing)
    }
}

#[async_trait::async_trait]
impl StandingCheck for SessionStanding {
    async fn current_role(&self, caller: &AuthContext) -> Result<Option<Role>, ApiError> {
        let Some(id) = &caller.session_id else {
            return Ok(None);
        };
        Ok(self
            .standing(id, &caller.user_id)
            .await?
            .and_then(|standing| standing.role_for(&caller.user_id, caller.session_epoch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_standing_reads_back_as_stored() {
        let standing = Standing {
            user_id: UserId::generate(),
            session_epoch: 3,
            revoked: true,
            user_epoch: 4,
            role: Role::Admin,
        };
        let (session, user) = encode(&standing);
        assert_eq!(decode(&session, &user), Some(standing));
        assert_eq!(decode("garbage", "1 admin"), None);
    }
}
