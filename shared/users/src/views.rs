//! What the API returns about users: never the password hash.

use serde::Serialize;
use zx_domain::{Role, Timestamp, User};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginView<'a> {
    pub user: UserView<'a>,
    pub token: &'a str,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: &'a str,
    pub refresh_expires_in: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfoView<'a> {
    pub user_id: &'a str,
    pub email: &'a str,
    pub role: Role,
    pub exp: i64,
}
