//! The caller's identity as the Lambda authorizer established it, read from the request context
//! API Gateway passes on (`requestContext.authorizer.lambda`).

use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};
use zx_domain::{Role, UserId};

use crate::ApiError;

/// Who is calling: set by the authorizer, never by the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthContext {
    pub user_id: UserId,
    pub role: Role,
}

impl AuthContext {
    /// Keys of the authorizer context.
    pub const USER_ID: &'static str = "userId";
    pub const ROLE: &'static str = "role";

    /// The authenticated caller, or 401 when the route was reached without the authorizer's
    /// context (a miswired route must not become an open one).
    pub fn from_request(request: &Request) -> Result<Self, ApiError> {
        let Some(RequestContext::ApiGatewayV2(context)) = request.request_context_ref() else {
            return Err(ApiError::unauthorized());
        };
        let fields = context
            .authorizer
            .as_ref()
            .map(|a| &a.fields)
            .ok_or_else(ApiError::unauthorized)?;
        let text = |key: &str| fields.get(key).and_then(|v| v.as_str());
        let user_id = text(Self::USER_ID)
            .and_then(|id| UserId::parse(id).ok())
            .ok_or_else(ApiError::unauthorized)?;
        let role = text(Self::ROLE)
            .and_then(|r| Role::parse(r).ok())
            .ok_or_else(ApiError::unauthorized)?;
        Ok(Self { user_id, role })
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
