//! What the API returns about users: never the password hash.

use serde::Serialize;
use zx_domain::{Role, Timestamp, User};

/// A user's profile.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = User)]
pub struct UserView<'a> {
    pub user_id: &'a str,
    pub username: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl<'a> From<&'a User> for UserView<'a> {
    fn from(user: &'a User) -> Self {
        Self {
            user_id: user.id.as_str(),
            username: user.username.as_str(),
            email: user.email.as_str(),
            role: user.role,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

/// A profile whose new e-mail awaits its code: the answer is the same whether or not the new
/// address is registered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = PendingEmailChange)]
pub struct PendingEmailView<'a> {
    #[serde(flatten)]
    pub user: UserView<'a>,
    /// The address asked for; the profile's `email` stays until it is confirmed.
    pub pending_email: &'a str,
    /// When the code sent to it stops working.
    pub pending_email_expires_at: Timestamp,
}

/// A session's tokens: what a login and a refresh answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Session)]
pub struct LoginView<'a> {
    pub user: UserView<'a>,
    /// The access token (EdDSA JWT) for `Authorization: Bearer`.
    pub token: &'a str,
    #[schema(examples("Bearer"))]
    pub token_type: &'static str,
    /// Seconds the access token is valid.
    pub expires_in: u64,
    /// Good for one `POST /api/v1/users/refresh`; keep it secret.
    pub refresh_token: &'a str,
    /// Seconds the refresh token is valid.
    pub refresh_expires_in: u64,
}

/// What a valid access token says.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TokenInfo)]
pub struct TokenInfoView<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub exp: i64,
}
