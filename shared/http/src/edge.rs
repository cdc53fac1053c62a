//! The edge every API function runs a request through, the same code locally and deployed:
//! bearer-token verification (RFC 6750 401s), per-client rate limits counted in the cache
//! (429 with `Retry-After` and `RateLimit-*`), then the handler, with one log line.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use zx_auth::TokenVerifier;
use zx_auth::token::bearer_token;
use zx_cache::{RateLimiter, Window};

use crate::{ApiError, AuthContext, client_ip, serve};

/// Whether a route needs a valid bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; a valid token still identifies the client for rate limiting.
    Public,
    /// A valid token, else 401.
    Authenticated,
    /// A valid token whose session still stands, else 401; the caller acts with the stored
    /// role (writes: see [`StandingCheck`]).
    Checked,
    /// [`Access::Checked`], and the stored role is admin, else 403: the one admin check.
    Admin,
}

impl Access {
    /// Whether a request without a valid token is refused.
    pub const fn needs_token(self) -> bool {
        !matches!(self, Self::Public)
    }

    /// Whether the caller's session standing (and stored role) is checked.
    pub const fn checks_standing(self) -> bool {
        matches!(self, Self::Checked | Self::Admin)
    }
}

/// What the store says now about an authenticated caller: checked on admin routes and writes,
/// so a token whose session was ended (logout, a password, e-mail or role change, a replayed
/// refresh token) stops working there before it expires, and a demoted admin acts as a
/// customer.
#[async_trait::async_trait]
pub trait StandingCheck: Send + Sync {
    /// The role the caller may act with now, or `None` when its session no longer stands.
    async fn current_role(&self, caller: &AuthContext)
    -> Result<Option<zx_domain::Role>, ApiError>;
}

/// The per-client limit of a group of routes (the seed's Kong services).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteLimit {
    /// `users`, `products`, `orders`: part of the counter's key.
    pub group: &'static str,
    /// Requests per client per minute.
    pub per_minute: u32,
}

/// Authentication and rate limiting for one function.
#[derive(Clone)]
pub struct Edge {
    access: Access,
    verifier: Option<Arc<TokenVerifier>>,
    limit: Option<(RateLimiter, RouteLimit)>,
    standing: Option<Arc<dyn StandingCheck>>,
}

/// An HTTP function's handler: request in, response out (errors already problem+json).
pub type HttpHandler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

impl Edge {
    /// `verifier` is required for [`Access::Authenticated`] (checked by the caller); without a
    /// limiter (no cache configured) limits are not enforced.
    pub fn new(
        access: Access,
        verifier: Option<Arc<TokenVerifier>>,
        limit: Option<(RateLimiter, RouteLimit)>,
    ) -> Self {
        Self {
            access,
            verifier,
            limit,
            standing: None,
        }
    }

    /// Checks every authenticated caller's standing before the handler: 401 (`invalid_token`)
    /// when the token's session no longer stands, and the stored role in place of the token's.
    pub fn with_standing(mut self, standing: Arc<dyn StandingCheck>) -> Self {
        self.standing = Some(standing);
        self
    }

    /// Wraps `handler` into an [`HttpHandler`] that runs every request through this edge.
    pub fn wrap<F, Fut>(self, handler: F) -> HttpHandler
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
    {
        let edge = Arc::new(self);
        let handler = Arc::new(handler);
        Arc::new(move |request| {
            let edge = edge.clone();
            let handler = handler.clone();
            Box::pin(async move { edge.handle(request, |r| handler(r)).await })
        })
    }

    /// The caller a valid bearer token names: `Ok(None)` without bearer credentials (no
    /// `Authorization`, or another scheme: RFC 6750 §3.1 gives those no error code), `Err` for
    /// a bearer token that is malformed or does not verify (the reason is logged, never sent).
    fn authenticate(&self, request: &Request) -> Result<Option<AuthContext>, ()> {
        let Some(header) = request.headers().get(http::header::AUTHORIZATION) else {
            return Ok(None);
        };
        let header = header.to_str().map_err(|_| ())?;
        let scheme = header.trim().split(' ').next().unwrap_or_default();
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Ok(None);
        }
        let token = bearer_token(header).ok_or(())?;
        let verifier = self.verifier.as_deref().ok_or(())?;
        match verifier.verify(token) {
            Ok(claims) => AuthContext::from_claims(claims).map(Some).ok_or(()),
            Err(error) => {
                tracing::info!(reason = %error, "bearer token rejected");
                Err(())
            }
        }
    }

    /// Runs one request: authenticate, count it for the client, then the handler.
    pub async fn handle<F, Fut>(&self, request: Request, handler: F) -> Response<Body>
    where
        F: FnOnce(Request) -> Fut,
        Fut: Future<Output = Result<Response<Body>, ApiError>>,
    {
        let mut window: Option<Window> = None;
        let counted = &mut window;
        let mut response = serve(request, |mut request| async move {
            let caller = self.authenticate(&request);
            if let Some((limiter, limit)) = &self.limit {
                let client = match &caller {
                    Ok(Some(caller)) => format!("user:{}", caller.user_id),
                    _ => format!("ip:{}", client_ip(&request)),
                };
                let key = format!("{}:{client}", limit.group);
                *counted = limiter.count(&key, limit.per_minute).await;
                if let Some(window) = counted.filter(Window::is_exceeded) {
                    tracing::info!(
                        group = limit.group,
                        limit = limit.per_minute,
                        "rate limited"
                    );
                    metrics::counter!(zx_domain::metrics::RATE_LIMITED, "Limit" => limit.group)
                        .increment(1);
                    return Err(ApiError::TooManyRequests {
                        retry_after: window.reset_in,
                        limit: window.limit,
                    });
                }
            }
            match caller {
                Ok(Some(mut caller)) => {
                    if self.access.checks_standing() && self.standing.is_none() {
                        // A checked route wired without its check must not trust the token.
                        return Err(ApiError::internal("a checked route has no standing check"));
                    }
                    if let Some(standing) = &self.standing {
                        match standing.current_role(&caller).await? {
                            Some(role) => caller.role = role,
                            None => {
                                tracing::info!(
                                    event = "revoked_token_refused",
                                    user_id = %caller.user_id,
                                    session_id = caller.session_id.as_ref().map(|s| s.to_string()),
                                    "access token of a session that no longer stands"
                                );
                                return Err(ApiError::invalid_token());
                            }
                        }
                    }
                    if self.access == Access::Admin && !caller.is_admin() {
                        return Err(ApiError::forbidden("only an admin may do this"));
                    }
                    request.extensions_mut().insert(caller);
                }
                Ok(None) if self.access.needs_token() => {
                    return Err(ApiError::missing_credentials());
                }
                Err(()) if self.access.needs_token() => {
                    return Err(ApiError::invalid_token());
                }
                Ok(None) | Err(()) => {}
            }
            handler(request).await
        })
        .await;
        // A handler's own, stricter limit (login, register) answers with its own headers.
        if let Some(window) = window.filter(|_| !response.headers().contains_key("ratelimit-limit"))
        {
            let headers = response.headers_mut();
            for (name, value) in [
                ("ratelimit-limit", u64::from(window.limit)),
                ("ratelimit-remaining", window.remaining()),
                ("ratelimit-reset", window.reset_in.as_secs().max(1)),
            ] {
                headers.insert(name, http::HeaderValue::from(value));
            }
        }
        response
    }
}

/// Serves `handler` as a Lambda function (API Gateway HTTP API events) until the runtime stops.
pub async fn run(handler: HttpHandler) -> Result<(), lambda_http::Error> {
    lambda_http::run(lambda_http::service_fn(move |request: Request| {
        let response = handler(request);
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    }))
    .await
}
