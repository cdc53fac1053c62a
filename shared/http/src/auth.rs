//! The caller's identity, established by the edge ([`crate::Edge`]) from the bearer token
//! inside the function, and handed to handlers in the request's extensions.

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use zx_auth::AuthClaims;
use zx_domain::{Role, SessionId, UserId};

use crate::ApiError;

/// Who is calling: taken from a verified token, never from anything else the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub user_id: UserId,
    pub role: Role,
    pub email: String,
    /// The token's expiry (seconds since the epoch).
    pub expires_at: i64,
    /// The session the token continues (none in tokens issued outside a session).
    pub session_id: Option<SessionId>,
    /// The user's session epoch when the token was issued.
    pub session_epoch: u64,
}

impl AuthContext {
    /// The caller a verified token names.
    pub fn from_claims(claims: AuthClaims) -> Option<Self> {
        let session_id = match claims.sid.as_deref() {
            Some(sid) => Some(SessionId::parse(sid).ok()?),
            None => None,
        };
        Some(Self {
            user_id: claims.user_id().ok()?,
            role: claims.role,
            email: claims.email,
            expires_at: claims.exp,
            session_id,
            session_epoch: claims.sep,
        })
    }

    /// The authenticated caller, or 401 when the edge put none in the request (a route wired
    /// without authentication must not become an open one).
    pub fn from_request(request: &Request) -> Result<Self, ApiError> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(ApiError::missing_credentials)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// Whether the caller may act on `owner`'s resources: its owner, or an admin.
    pub fn may_access(&self, owner: &UserId) -> bool {
        self.is_admin() || &self.user_id == owner
    }
}

/// The client's address as API Gateway saw it (`requestContext.http.sourceIp`), or `unknown`.
pub fn client_ip(request: &Request) -> &str {
    match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => {
            context.http.source_ip.as_deref().unwrap_or("unknown")
        }
        _ => "unknown",
    }
}
