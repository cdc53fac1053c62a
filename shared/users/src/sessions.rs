//! Sessions: the pair a login or a refresh answers (a short access token and a single-use
//! refresh token), refresh with rotation and replay detection, and logout.

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use zx_auth::{IssuedToken, TokenIssuer, new_refresh_token, parse_refresh_token};
use zx_domain::{
    Presented, RepositoryError, Session, SessionEnding, SessionId, SessionRotation, SessionStarter,
    Timestamp, User, UserReader,
};
use zx_http::{ApiError, json_body, json_response};

use crate::views::{LoginView, UserView};

/// A token that could not be signed: 503 when the signing service (KMS) failed, which a retry
/// may cure; 500 otherwise.
fn signing_failed(error: zx_auth::TokenError) -> ApiError {
    match error {
        zx_auth::TokenError::Remote(ref remote) if remote.transient => ApiError::Unavailable {
            detail: "signing is unavailable for a moment; try again shortly".into(),
            retry_after: std::time::Duration::from_secs(2),
            source: Some(Box::new(error)),
        },
        other => ApiError::internal(other),
    }
}

/// An access token and the refresh token that continues its session.
pub struct SessionTokens {
    /// The session the pair belongs to (for the security events' logs).
    pub session_id: SessionId,
    pub access: IssuedToken,
    pub refresh: String,
    pub refresh_expires_in: u64,
}

/// Starts a session for `user` (who just proved who they are): stores it and returns its pair.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn start_session(
    sessions: &dyn SessionStarter,
    tokens: &TokenIssuer,
    user: &User,
) -> Result<SessionTokens, ApiError> {
    let id = SessionId::generate();
    let refresh = new_refresh_token(&id).map_err(ApiError::internal)?;
    let refresh_ttl = tokens.settings().refresh_ttl;
    let session = Session {
        id,
        user_id: user.id.clone(),
        token_hash: refresh.hash,
        user_epoch: user.session_epoch,
        created_at: Timestamp::now(),
        expires_at: Timestamp::now().plus(refresh_ttl),
        revoked: false,
        used_hashes: Vec::new(),
    };
    // Signed first: a signing failure leaves no session behind.
    let access = tokens
        .issue(user, &session.id)
        .await
        .map_err(signing_failed)?;
    sessions.create_session(&session).await?;
    Ok(SessionTokens {
        session_id: session.id.clone(),
        access,
        refresh: refresh.token,
        refresh_expires_in: refresh_ttl.as_secs(),
    })
}

/// Why a refresh token was refused (for logs; the client learns only that it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not of our form, or no such session.
    Unknown,
    Revoked,
    Expired,
    /// A token that is no longer its session's current one: the session is now revoked.
    Replayed,
    /// The user is gone, or changed password or role since the session began.
    UserChanged,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::Replayed => "replayed",
            Self::UserChanged => "user changed",
        }
    }
}

/// The outcome of presenting a refresh token.
pub enum Refreshed {
    /// The user (as now stored) and the new pair.
    Pair(Box<(User, SessionTokens)>),
    Refused(Refused),
}

/// Exchanges a refresh token for a new pair. The token is good once: the session's stored
/// hash moves to the new token, and the spent one is remembered. Presenting a remembered
/// (used) token means a copy is in someone else's hands: the whole session is revoked, so the
/// new token is refused too. A token of the right form that the session does not know changes
/// nothing (only someone who holds a token of the session can end it). The new access token
/// carries the user's current role and e-mail.
#[tracing::instrument(skip_all)]
pub async fn refresh_session(
    users: &dyn UserReader,
    sessions: &dyn SessionRotation,
    tokens: &TokenIssuer,
    presented: &str,
) -> Result<Refreshed, RepositoryError> {
    let refused = |why| Ok(Refreshed::Refused(why));
    let Some((id, hash)) = parse_refresh_token(presented) else {
        return refused(Refused::Unknown);
    };
    let Some(session) = sessions.find_session(&id).await? else {
        return refused(Refused::Unknown);
    };
    if session.revoked {
        return refused(Refused::Revoked);
    }
    match session.recognise(&hash) {
        Presented::Current => {}
        Presented::Used => {
            sessions.revoke_session(&id).await?;
            replayed(&session);
            return refused(Refused::Replayed);
        }
        Presented::Unknown => return refused(Refused::Unknown),
    }
    let now = Timestamp::now();
    if session.expires_at <= now {
        return refused(Refused::Expired);
    }
    let user = match users.find_by_id(&session.user_id).await? {
        Some(user) if user.session_epoch == session.user_epoch => user,
        _ => return refused(Refused::UserChanged),
    };
    // Signed before the rotation: a signing outage (KMS) leaves the session as it was, and the
    // client's retry with the same refresh token still works.
    let access = tokens.issue(&user, &id).await.map_err(|e| match e {
        zx_auth::TokenError::Remote(ref remote) if remote.transient => {
            RepositoryError::unavailable("signing a token", e)
        }
        other => RepositoryError::failed("signing a token", other),
    })?;
    let new = new_refresh_token(&id).map_err(|e| RepositoryError::failed("refresh token", e))?;
    let next = session.rotated(new.hash, now.plus(tokens.settings().refresh_ttl));
    match sessions.rotate_session(&session, &next).await {
        Ok(()) => {}
        Err(RepositoryError::ConcurrentUpdate) => {
            // Another refresh with this very token won the race: of the two presenters one is
            // not the owner. Revoke. (Otherwise the user's epoch moved on meanwhile: a password
            // or role change, which ended the session already.)
            let now_stored = sessions.find_session(&id).await?;
            return match now_stored {
                Some(stored) if stored.token_hash != session.token_hash => {
                    sessions.revoke_session(&id).await?;
                    replayed(&session);
                    refused(Refused::Replayed)
                }
                Some(stored) if stored.revoked => refused(Refused::Revoked),
                _ => refused(Refused::UserChanged),
            };
        }
        Err(e) => return Err(e),
    }
    let refresh_expires_in =
        u64::try_from((next.expires_at.unix_seconds() - now.unix_seconds()).max(0)).unwrap_or(0);
    Ok(Refreshed::Pair(Box::new((
        user,
        SessionTokens {
            session_id: next.id.clone(),
            access,
            refresh: new.token,
            refresh_expires_in,
        },
    ))))
}

/// The security event of a replayed refresh token (the template counts and alarms on it).
fn replayed(session: &Session) {
    tracing::warn!(
        event = "refresh_replayed",
        user_id = %session.user_id,
        session_id = %session.id,
        "a used refresh token was presented again: session revoked"
    );
}

/// Ends the session a refresh token belongs to: its current token, or one already used (its
/// session is compromised anyway). A token the session does not know, or that names no
/// session, changes nothing and is not an error (RFC 7009 §2.2).
#[tracing::instrument(skip_all)]
pub async fn end_session(
    sessions: &dyn SessionEnding,
    presented: &str,
) -> Result<(), RepositoryError> {
    let Some((id, hash)) = parse_refresh_token(presented) else {
        return Ok(());
    };
    match sessions.find_session(&id).await? {
        Some(session) if session.recognise(&hash) != Presented::Unknown => {
            sessions.revoke_session(&id).await?;
            tracing::info!(
                event = "session_revoked",
                user_id = %session.user_id,
                session_id = %id,
                "session revoked by its owner"
            );
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The response of a login or a refresh (`zx_http::serve` marks it `no-store`, as RFC 6749 §5.1
/// asks of token responses).
pub(crate) fn pair_response(user: &User, pair: &SessionTokens) -> Result<Response<Body>, ApiError> {
    json_response(
        200,
        &LoginView {
            user: UserView::from(user),
            token: &pair.access.token,
            token_type: "Bearer",
            expires_in: pair.access.expires_in,
            refresh_token: &pair.refresh,
            refresh_expires_in: pair.refresh_expires_in,
        },
    )
}

/// The body of `POST /users/refresh` and `POST /users/logout`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RefreshBody {
    refresh_token: String,
}

fn refused_refresh() -> ApiError {
    ApiError::Unauthorized {
        detail: "the refresh token is invalid, expired or revoked; sign in again".into(),
        challenge: r#"Bearer realm="zhixuan""#,
    }
}

#[utoipa::path(post, path = "/api/v1/users/refresh", tag = "users",
    request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token and refresh token; the one presented is spent.", body = LoginView),
        (status = 401, response = zx_http::openapi::Unauthorized),
    ))]
/// `POST /users/refresh`: a new pair for a valid refresh token; 401 otherwise.
pub async fn refresh(
    users: &dyn UserReader,
    sessions: &dyn SessionRotation,
    tokens: &TokenIssuer,
    cache: Option<&zx_cache::Cache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body: RefreshBody = json_body(&request)?;
    match refresh_session(users, sessions, tokens, &body.refresh_token).await? {
        Refreshed::Pair(refreshed) => {
            let (user, pair) = &*refreshed;
            tracing::info!(user_id = %user.id, "session refreshed");
            pair_response(user, pair)
        }
        Refreshed::Refused(why) => {
            if why == Refused::Replayed
                && let Some((id, _)) = parse_refresh_token(&body.refresh_token)
            {
                crate::standing::forget_session(cache, &id).await;
            }
            tracing::info!(
                reason = why.as_str(),
                source_ip = zx_http::client_ip(&request),
                "refresh refused"
            );
            Err(refused_refresh())
        }
    }
}

#[utoipa::path(post, path = "/api/v1/users/logout", tag = "users",
    request_body = RefreshBody,
    responses(
        (status = 204, description = "The session is ended (or the token named none)."),
    ))]
/// `POST /users/logout`: revokes the session of the refresh token; 204 whether or not it named
/// one. The session's access tokens stop working at once on admin routes, writes and
/// `/users/validate` (they check the session's standing); reads accept them until they expire
/// (`JWT_EXPIRES_IN`).
pub async fn logout(
    sessions: &dyn SessionEnding,
    cache: Option<&zx_cache::Cache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body: RefreshBody = json_body(&request)?;
    end_session(sessions, &body.refresh_token).await?;
    if let Some((id, _)) = parse_refresh_token(&body.refresh_token) {
        crate::standing::forget_session(cache, &id).await;
    }
    tracing::info!(source_ip = zx_http::client_ip(&request), "session ended");
    Response::builder()
        .status(204)
        .body(Body::Empty)
        .map_err(ApiError::internal)
}
