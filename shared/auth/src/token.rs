//! HS256 access tokens: issued at login, verified by the authorizer and `/users/validate`.
//! Only HS256 is accepted; `exp`, `iss`, `aud` and `sub` are required and checked.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zx_domain::{Email, Role, Timestamp, User, UserId};

/// The signing secret: at least 32 bytes, never printed.
#[derive(Clone)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    pub const MIN_BYTES: usize = 32;

    pub fn parse(secret: &str) -> Result<Self, String> {
        if secret.len() < Self::MIN_BYTES {
            return Err(format!(
                "JWT_SECRET must be at least {} bytes (got {}); generate one with `openssl rand -base64 48`",
                Self::MIN_BYTES,
                secret.len()
            ));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(**redacted**)")
    }
}

/// Everything needed to issue and check tokens.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub secret: JwtSecret,
    pub issuer: String,
    pub audience: String,
    pub ttl: Duration,
}

/// Parses a token lifetime: plain seconds (`3600`) or a number with `s`, `m`, `h` or `d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], c),
        _ => (text, 's'),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("JWT_EXPIRES_IN must look like 3600, 30m, 24h or 7d, got {text:?}"))?;
    let seconds = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("JWT_EXPIRES_IN must look like 3600, 30m, 24h or 7d, got {text:?}"))?;
    if seconds == 0 || seconds > 30 * 86_400 {
        return Err("JWT_EXPIRES_IN must be between 1 second and 30 days".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// The claims we put in and require from every token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthClaims {
    pub sub: String,
    pub email: String,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

impl AuthClaims {
    pub fn user_id(&self) -> Result<UserId, TokenError> {
        UserId::parse(&self.sub).map_err(|_| TokenError::Invalid)
    }
}

/// A freshly signed token and its lifetime in seconds.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_in: u64,
    pub claims: AuthClaims,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Expired, badly signed, wrong algorithm, wrong issuer or audience, missing claims: the
    /// reason is for logs, the client only learns the token is not valid.
    #[error("token rejected: {0}")]
    Rejected(#[source] jsonwebtoken::errors::Error),
    #[error("token claims are invalid")]
    Invalid,
    #[error("could not sign the token")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

/// Signs and verifies tokens with one secret.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    settings: TokenSettings,
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenService")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    pub fn new(settings: TokenSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Self {
            encoding: EncodingKey::from_secret(&settings.secret.0),
            decoding: DecodingKey::from_secret(&settings.secret.0),
            validation,
            settings,
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs a token for `user`, valid for the configured lifetime from now.
    pub fn issue(&self, user: &User) -> Result<IssuedToken, TokenError> {
        self.issue_at(
            &user.id,
            &user.email,
            user.role,
            Timestamp::now().unix_seconds(),
        )
    }

    /// Signs a token as if issued at `iat` (seconds since the epoch).
    pub fn issue_at(
        &self,
        id: &UserId,
        email: &Email,
        role: Role,
        iat: i64,
    ) -> Result<IssuedToken, TokenError> {
        let ttl = self.settings.ttl.as_secs();
        let claims = AuthClaims {
            sub: id.to_string(),
            email: email.to_string(),
            role,
            iat,
            exp: iat.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(TokenError::Signing)?;
        Ok(IssuedToken {
            token,
            expires_in: ttl,
            claims,
        })
    }

    /// Verifies signature, algorithm, expiry, issuer and audience, and returns the claims.
    pub fn verify(&self, token: &str) -> Result<AuthClaims, TokenError> {
        let data = jsonwebtoken::decode::<AuthClaims>(token, &self.decoding, &self.validation)
            .map_err(TokenError::Rejected)?;
        data.claims.user_id()?;
        Ok(data.claims)
    }
}

/// The token in an `Authorization: Bearer <token>` header value, if it has that form.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str) -> TokenSettings {
        TokenSettings {
            secret: JwtSecret::parse(secret).unwrap(),
            issuer: "zhixuan".into(),
            audience: "zhixuan-api".into(),
            ttl: Duration::from_secs(3600),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn sample() -> (UserId, Email) {
        (UserId::generate(), Email::parse("a@example.com").unwrap())
    }

    #[test]
    fn secret_must_be_32_bytes_and_never_prints() {
        assert!(JwtSecret::parse("short").unwrap_err().contains("32 bytes"));
        let secret = JwtSecret::parse(SECRET).unwrap();
        assert!(!format!("{secret:?}").contains("0123"));
    }

    #[test]
    fn round_trip() {
        let tokens = TokenService::new(settings(SECRET));
        let (id, email) = sample();
        let issued = tokens
            .issue_at(&id, &email, Role::Admin, Timestamp::now().unix_seconds())
            .unwrap();
        let claims = tokens.verify(&issued.token).unwrap();
        assert_eq!(claims.sub, id.as_str());
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn rejects_expired_foreign_unsigned_and_misaddressed_tokens() {
        let tokens = TokenService::new(settings(SECRET));
        let (id, email) = sample();
        let now = Timestamp::now().unix_seconds();

        let expired = tokens
            .issue_at(&id, &email, Role::Customer, now - 7200)
            .unwrap();
        assert!(tokens.verify(&expired.token).is_err(), "expired");

        let other = TokenService::new(settings("another-secret-another-secret-xx"));
        let foreign = other.issue_at(&id, &email, Role::Customer, now).unwrap();
        assert!(tokens.verify(&foreign.token).is_err(), "other secret");

        let mut wrong_aud = settings(SECRET);
        wrong_aud.audience = "someone-else".into();
        let t = TokenService::new(wrong_aud)
            .issue_at(&id, &email, Role::Customer, now)
            .unwrap();
        assert!(tokens.verify(&t.token).is_err(), "wrong aud");

        let mut wrong_iss = settings(SECRET);
        wrong_iss.issuer = "evil".into();
        let t = TokenService::new(wrong_iss)
            .issue_at(&id, &email, Role::Customer, now)
            .unwrap();
        assert!(tokens.verify(&t.token).is_err(), "wrong iss");

        // alg: none, with the claims of a valid token.
        let payload = issued_payload(
            &tokens
                .issue_at(&id, &email, Role::Admin, now)
                .unwrap()
                .token,
        );
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(tokens.verify(&none).is_err(), "alg none");
        assert!(tokens.verify("garbage").is_err());
    }

    fn issued_payload(token: &str) -> String {
        token.split('.').nth(1).unwrap().to_owned()
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("forever").is_err());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
