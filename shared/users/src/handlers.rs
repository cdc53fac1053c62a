//! HTTP handlers of the users service. Each takes only the capabilities it uses and returns a
//! response or an [`ApiError`]; `zx_http::serve` turns errors into problem+json.

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use zx_auth::{PasswordHasher, TokenIssuer};
use zx_domain::{
    Email, FieldError, Notifier, Password, Role, SessionStarter, User, UserId, UserReader,
    UserRepository, UserSignIn, Username, ValidationErrors,
};
use zx_http::{ApiError, AuthContext, client_ip, json_body, json_response, path_param};

use crate::guard::{PasswordGuard, Presenter};
use crate::views::{TokenInfoView, UserView};

/// The body of `POST /users/register`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// 3–32 letters, digits, `_`, `-` or `.`; unique without regard to case.
    #[schema(examples("li_wei"), min_length = 3, max_length = 32)]
    username: String,
    /// Trimmed and lower-cased; unique.
    #[schema(examples("li.wei@example.com"), format = Email, max_length = 254)]
    email: String,
    /// 8–72 bytes (bcrypt's limit: longer is refused, never truncated).
    #[schema(examples("correct horse 1"), min_length = 8)]
    password: String,
}

#[utoipa::path(post, path = "/api/v1/users/register", tag = "users",
    request_body = RegisterBody,
    responses(
        (status = 201, description = "Registered, as a customer.", body = UserView, links(
            ("GetUser" = (operation_id = "get_user", parameters(("id" = "$response.body#/userId")))),
            ("UpdateUser" = (operation_id = "update_user", parameters(("id" = "$response.body#/userId")))),
        )),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `POST /users/register`: creates a customer. 409 when the e-mail or username is taken;
/// 429 past `register_per_ip` attempts a minute from one client; 503 when that limit cannot be
/// counted (it fails closed).
pub async fn register(
    users: &dyn UserRepository,
    hasher: &PasswordHasher,
    guard: &PasswordGuard,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let ip = client_ip(&request);
    guard
        .per_client(&[(format!("register:{ip}"), guard.limits.register_per_ip)])
        .await?;
    let body: RegisterBody = json_body(&request)?;
    let mut errors = ValidationErrors::default();
    let username = errors.check("username", Username::parse(&body.username));
    let email = errors.check("email", Email::parse(&body.email));
    let password = errors.check("password", Password::parse(&body.password));
    let (Some(username), Some(email), Some(password)) = (username, email, password) else {
        return Err(errors.into());
    };
    let hash = hasher.hash(&password).await.map_err(ApiError::internal)?;
    let user = User::new(username, email, hash, Role::Customer);
    users.create(&user).await?;
    tracing::info!(user_id = %user.id, "user registered");
    json_response(201, &UserView::from(&user))
}

/// The body of `POST /users/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    email: String,
    password: String,
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized {
        detail: "invalid email or password".into(),
        challenge: r#"Bearer realm="zhixuan""#,
    }
}

/// The account a password check counts against: the e-mail as login normalises it (trimmed,
/// lower-cased, bounded), whether or not an account has it.
fn account_key(email: &str) -> String {
    email
        .trim()
        .to_lowercase()
        .chars()
        .take(Email::MAX_LEN)
        .collect()
}

#[utoipa::path(post, path = "/api/v1/users/login", tag = "users",
    request_body = LoginBody,
    responses(
        (status = 200, description = "An access token and a refresh token.", body = crate::views::LoginView),
        (status = 401, response = zx_http::openapi::Unauthorized),
    ))]
/// `POST /users/login`: a token for valid credentials. An unknown e-mail and a wrong password
/// give the same 401, after the same bcrypt work. 429 past the per-minute limits for the
/// client's IP and e-mail and for the IP alone, and 429 `too-many-attempts` while the account
/// (whatever the IP) waits after repeated wrong passwords or is locked; 503 when those limits
/// cannot be counted. A hash below the configured bcrypt cost is replaced on success.
pub async fn login(
    users: &dyn UserSignIn,
    sessions: &dyn SessionStarter,
    hasher: &PasswordHasher,
    tokens: &TokenIssuer,
    guard: &PasswordGuard,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body: LoginBody = json_body(&request)?;
    let ip = client_ip(&request);
    let account = account_key(&body.email);
    guard
        .per_client(&[
            (format!("login-ip:{ip}"), guard.limits.login_per_ip),
            (
                format!("login:{ip}:{account}"),
                guard.limits.login_per_ip_and_email,
            ),
        ])
        .await?;
    let user = match Email::parse(&body.email) {
        Ok(email) => users.find_by_email(&email).await?,
        Err(_) => None,
    };
    let presenter = Presenter {
        check: "login",
        source_ip: ip,
        user_id: user.as_ref().map(|u| &u.id),
    };
    let matches = guard
        .check(
            hasher,
            &account,
            presenter,
            &body.password,
            user.as_ref().map(|u| &u.password_hash),
        )
        .await?;
    let user = match user {
        Some(user) if matches => user,
        _ => return Err(invalid_credentials()),
    };
    let user = rehash_if_weaker(users, hasher, user, &body.password).await;
    let pair = crate::sessions::start_session(sessions, tokens, &user).await?;
    tracing::info!(event = "login_succeeded", user_id = %user.id, session_id = %pair.session_id, source_ip = ip, "user logged in");
    crate::sessions::pair_response(&user, &pair)
}

/// `user` (who just gave the right `password`) with a hash at the configured cost: stored
/// anew when the stored one is cheaper. A failure to store it (a concurrent change, a store
/// fault) is logged and does not fail the login: the next login tries again.
async fn rehash_if_weaker(
    users: &dyn UserSignIn,
    hasher: &PasswordHasher,
    user: User,
    password: &str,
) -> User {
    if !hasher.needs_rehash(&user.password_hash) {
        return user;
    }
    let Ok(password) = Password::parse(password) else {
        return user;
    };
    let hash = match hasher.hash(&password).await {
        Ok(hash) => hash,
        Err(error) => {
            tracing::error!(%error, "rehashing failed");
            return user;
        }
    };
    let mut next = user.next_version();
    next.password_hash = hash;
    match users.replace_password_hash(&user, &next).await {
        Ok(()) => {
            tracing::info!(event = "password_rehashed", user_id = %user.id, cost = hasher.cost().value(), "password hash raised to the configured cost");
            next
        }
        Err(error) => {
            tracing::warn!(user_id = %user.id, error = %zx_domain::cause_chain(&error), "rehash not stored");
            user
        }
    }
}

#[utoipa::path(get, path = "/api/v1/users/validate", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token's claims.", body = TokenInfoView),
    ))]
/// `GET /users/validate`: what the caller's bearer token says (the edge verified it; a bad
/// or missing token never reaches this handler).
pub async fn validate(request: Request) -> Result<Response<Body>, ApiError> {
    let caller = AuthContext::from_request(&request)?;
    json_response(
        200,
        &TokenInfoView {
            user_id: caller.user_id.as_str(),
            email: &caller.email,
            role: caller.role,
            exp: caller.expires_at,
        },
    )
}

fn user_not_found() -> ApiError {
    ApiError::not_found("no such user")
}

#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile.", body = UserView),
        (status = 404, response = zx_http::openapi::NotFound),
    ))]
/// `GET /users/me`: the caller's profile.
pub async fn me(users: &dyn UserReader, request: Request) -> Result<Response<Body>, ApiError> {
    let caller = AuthContext::from_request(&request)?;
    let user = users
        .find_by_id(&caller.user_id)
        .await?
        .ok_or_else(user_not_found)?;
    json_response(200, &UserView::from(&user))
}

/// The user `{id}` names, if the caller may see it: itself, or anyone for an admin. Anything
/// else is 404, so a customer cannot tell whether another id exists.
async fn visible_user(
    users: &dyn UserReader,
    request: &Request,
) -> Result<(AuthContext, User), ApiError> {
    let caller = AuthContext::from_request(request)?;
    let id = UserId::parse(path_param(request, "id")?).map_err(|_| user_not_found())?;
    if !caller.may_access(&id) {
        return Err(user_not_found());
    }
    let user = users.find_by_id(&id).await?.ok_or_else(user_not_found)?;
    Ok((caller, user))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id.", format = "uuid")),
    responses(
        (status = 200, description = "The profile.", body = UserView),
        (status = 404, response = zx_http::openapi::NotFound),
    ))]
/// `GET /users/{id}`: a profile, for its owner or an admin.
pub async fn get_user(
    users: &dyn UserReader,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let (_, user) = visible_user(users, &request).await?;
    json_response(200, &UserView::from(&user))
}

/// The body of `PUT /users/{id}`: at least one of `username`, `email`, `password`, `role`,
/// or `emailCode` alone.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = UpdateUserBody, min_properties = 1)]
pub struct UpdateBody {
    #[schema(min_length = 3, max_length = 32)]
    username: Option<String>,
    #[schema(format = Email, max_length = 254)]
    email: Option<String>,
    /// 8–72 bytes.
    #[schema(min_length = 8)]
    password: Option<String>,
    /// Required to change one's own password or e-mail; wrong ones count against the
    /// account's limit, as wrong passwords at login do.
    current_password: Option<String>,
    /// `customer` or `admin`; admins only.
    #[schema(value_type = Option<Role>)]
    role: Option<String>,
    /// The code sent to a new address, to confirm one's own e-mail change (on its own, with
    /// no other field).
    #[schema(max_length = 64)]
    email_code: Option<String>,
}

/// Which fields are present; never their values (passwords, codes).
impl std::fmt::Debug for UpdateBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateBody")
            .field("username", &self.username.is_some())
            .field("email", &self.email.is_some())
            .field("password", &self.password.is_some())
            .field("current_password", &self.current_password.is_some())
            .field("role", &self.role.is_some())
            .field("email_code", &self.email_code.is_some())
            .finish()
    }
}

#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A user id.", format = "uuid")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "The updated profile. A password, e-mail or role change ends every session of the user.", body = UserView),
        (status = 202, description = "One's own new e-mail awaits its code (sent to that address, valid for an hour; the same answer whether or not the address is registered).", body = crate::views::PendingEmailView),
        (status = 403, response = zx_http::openapi::Forbidden),
        (status = 404, response = zx_http::openapi::NotFound),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `PUT /users/{id}`: changes username, e-mail, password (with `currentPassword` when changing
/// one's own e-mail or password) and, for admins only, role. Unknown fields are rejected. A
/// wrong `currentPassword` counts against the account's limit (429 `too-many-attempts` while it
/// is locked; 503 when the limit cannot be counted). One's own new e-mail is asked for on its
/// own and waits for the code sent to it (202); `emailCode` confirms it and ends every session.
/// An admin changing another user's e-mail changes it at once (409 when it is taken).
pub async fn update_user(
    users: &dyn UserRepository,
    hasher: &PasswordHasher,
    guard: &PasswordGuard,
    cache: &zx_cache::Cache,
    notifier: &dyn Notifier,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body: UpdateBody = json_body(&request)?;
    let (caller, current) = visible_user(users, &request).await?;
    if let Some(code) = body.email_code.as_deref() {
        return confirm_email(users, cache, &body, &caller, current, code, &request).await;
    }
    if body.username.is_none()
        && body.email.is_none()
        && body.password.is_none()
        && body.role.is_none()
    {
        return Err(ApiError::bad_request(
            "nothing to update: give at least one of username, email, password, role, emailCode",
        ));
    }
    let mut errors = ValidationErrors::default();
    let username = body
        .username
        .as_deref()
        .map(|v| errors.check("username", Username::parse(v)));
    let email = body
        .email
        .as_deref()
        .map(|v| errors.check("email", Email::parse(v)));
    let password = body
        .password
        .as_deref()
        .map(|v| errors.check("password", Password::parse(v)));
    let role = body
        .role
        .as_deref()
        .map(|v| errors.check("role", Role::parse(v)));
    if body.current_password.is_some() && body.password.is_none() && body.email.is_none() {
        errors.push(FieldError::new(
            "currentPassword",
            "is only used together with password or email",
        ));
    }
    let email_changes = matches!(&email, Some(Some(email)) if *email != current.email);
    let own_email = email_changes && caller.user_id == current.id;
    if own_email && (body.username.is_some() || body.password.is_some() || body.role.is_some()) {
        errors.push(FieldError::new(
            "email",
            "one's own e-mail is changed on its own (with currentPassword)",
        ));
    }
    errors.into_result()?;
    if role.is_some() && !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin may change a role"));
    }
    // One's own e-mail and password are changed only with the current password (a stolen
    // access token alone must not take the account over); an admin acting on another user is
    // one by the stored role (the edge replaced the token's role after checking its session).
    if caller.user_id == current.id && (password.is_some() || email_changes) {
        let what = if password.is_some() {
            "password"
        } else {
            "e-mail"
        };
        let current_password = body.current_password.as_deref().ok_or_else(|| {
            ApiError::invalid_field(
                "currentPassword",
                format!("is required to change your {what}"),
            )
        })?;
        let presenter = Presenter {
            check: "current_password",
            source_ip: client_ip(&request),
            user_id: Some(&caller.user_id),
        };
        let account = account_key(current.email.as_str());
        if !guard
            .check(
                hasher,
                &account,
                presenter,
                current_password,
                Some(&current.password_hash),
            )
            .await?
        {
            return Err(ApiError::forbidden("currentPassword is incorrect"));
        }
    }

    if own_email && let Some(Some(email)) = &email {
        let expires_at =
            crate::email_change::request(users, cache, notifier, &current, email.clone()).await?;
        return json_response(
            202,
            &crate::views::PendingEmailView {
                user: UserView::from(&current),
                pending_email: email.as_str(),
                pending_email_expires_at: expires_at,
            },
        );
    }
    let mut next = current.next_version();
    if let Some(Some(username)) = username {
        next.username = username;
    }
    if let Some(Some(email)) = email
        && email_changes
    {
        // An admin's change to another user. Sessions were begun under the old address: all
        // of them end.
        next.email = email;
        next = next.with_sessions_revoked();
    }
    if let Some(Some(role)) = role
        && role != next.role
    {
        next.role = role;
        next = next.with_sessions_revoked();
    }
    if let Some(Some(password)) = password {
        next.password_hash = hasher.hash(&password).await.map_err(ApiError::internal)?;
        next = next.with_sessions_revoked();
    }
    let next = store_update(users, cache, &caller, &current, next, &request).await?;
    json_response(200, &UserView::from(&next))
}

/// Stores `next` in place of `current`; when its sessions ended or its role changed, forgets
/// the cached standing and logs the revocation.
async fn store_update(
    users: &dyn UserRepository,
    cache: &zx_cache::Cache,
    caller: &AuthContext,
    current: &User,
    next: User,
    request: &Request,
) -> Result<User, ApiError> {
    users.update(current, &next).await?;
    if next.session_epoch != current.session_epoch || next.role != current.role {
        crate::standing::forget_user(Some(cache), &next.id).await;
        tracing::info!(
            event = "sessions_revoked",
            user_id = %next.id,
            actor = %caller.user_id,
            role = next.role.as_str(),
            role_changed = next.role != current.role,
            source_ip = client_ip(request),
            "every session of the user ended"
        );
    }
    tracing::info!(user_id = %next.id, actor = %caller.user_id, "user updated");
    Ok(next)
}

/// `PUT /users/{me}` with `emailCode`: the pending address becomes the user's, and every
/// session ends (they began under the old address). 409 when the address was registered by
/// someone else meanwhile.
async fn confirm_email(
    users: &dyn UserRepository,
    cache: &zx_cache::Cache,
    body: &UpdateBody,
    caller: &AuthContext,
    current: User,
    code: &str,
    request: &Request,
) -> Result<Response<Body>, ApiError> {
    if body.username.is_some()
        || body.email.is_some()
        || body.password.is_some()
        || body.role.is_some()
        || body.current_password.is_some()
    {
        return Err(ApiError::invalid_field(
            "emailCode",
            "is sent on its own, with no other field",
        ));
    }
    if caller.user_id != current.id {
        return Err(ApiError::forbidden(
            "only the account's owner confirms its e-mail",
        ));
    }
    let confirmed = crate::email_change::confirm(cache, &current, code).await?;
    let mut next = current.next_version();
    next.email = confirmed.email.clone();
    let next = next.with_sessions_revoked();
    let next = store_update(users, cache, caller, &current, next, request).await?;
    crate::email_change::used(cache, &next.id, &confirmed).await;
    tracing::info!(event = "email_changed", user_id = %next.id, source_ip = client_ip(request), "the e-mail change was confirmed");
    json_response(200, &UserView::from(&next))
}
