//! Ed25519 (EdDSA) access tokens. Only the issuing function (`users-login`) holds the private
//! key ([`TokenIssuer`]); every function verifies with public keys only ([`TokenVerifier`]),
//! chosen by the token's `kid`, so two keys can be live during a rotation. Only EdDSA is
//! accepted; `exp`, `iat`, `iss`, `aud` and `sub` are required and checked.
//!
//! Key formats (environment-friendly, one line each):
//! - private key (`JWT_PRIVATE_KEY`): PKCS#8 v1 or v2, as PEM (`openssl genpkey -algorithm
//!   ed25519`) or as the base64 of its DER (`zx-admin jwt-keygen`);
//! - public keys (`JWT_PUBLIC_KEYS`): comma-separated base64url raw public keys (a JWK's `x`).
//!
//! A key's `kid` is its RFC 7638 JWK thumbprint, so it never needs configuring.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zx_domain::{Email, Role, Timestamp, User, UserId};

/// The RFC 7638 thumbprint of an Ed25519 public key (base64url of SHA-256 over its JWK).
fn thumbprint(x: &str) -> String {
    let jwk = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwk.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// An Ed25519 public key and its `kid`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    raw: Vec<u8>,
    x: String,
    kid: String,
}

impl PublicKey {
    fn from_raw(raw: &[u8]) -> Result<Self, String> {
        if raw.len() != 32 {
            return Err("an Ed25519 public key is 32 bytes".into());
        }
        let x = URL_SAFE_NO_PAD.encode(raw);
        Ok(Self {
            raw: raw.to_vec(),
            kid: thumbprint(&x),
            x,
        })
    }

    /// A base64url (padding optional) raw 32-byte public key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches('=');
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| "a public key must be base64url of 32 bytes".to_owned())?;
        Self::from_raw(&raw)
    }

    /// Comma-separated public keys (`JWT_PUBLIC_KEYS`): at least one, no duplicates.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let keys = text
            .split(',')
            .filter(|k| !k.trim().is_empty())
            .map(Self::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("at least one public key is required".into());
        }
        Ok(keys)
    }

    /// The base64url form [`PublicKey::parse`] reads.
    pub fn encoded(&self) -> &str {
        &self.x
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(kid={})", self.kid)
    }
}

/// An Ed25519 private key (PKCS#8). Never printed.
#[derive(Clone)]
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public: PublicKey,
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, String> {
        let document = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .map_err(|_| "could not generate an Ed25519 key".to_owned())?;
        Self::from_pkcs8(document.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|_| "not an Ed25519 private key in PKCS#8 form".to_owned())?;
        Ok(Self {
            pkcs8: der.to_vec(),
            public: PublicKey::from_raw(pair.public_key().as_ref())?,
        })
    }

    /// PEM (`-----BEGIN PRIVATE KEY-----`), or the base64 of the PKCS#8 DER on one line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let body: String = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(body.trim().as_bytes())
            .map_err(|_| "must be an Ed25519 private key: PKCS#8 PEM or base64 DER".to_owned())?;
        Self::from_pkcs8(&der)
    }

    /// The base64 of the PKCS#8 DER: what [`SigningKey::parse`] reads, on one line.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.pkcs8)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(**redacted**, kid={})", self.public.kid)
    }
}

/// What every token carries and every verifier requires.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    /// Access tokens' lifetime (`JWT_EXPIRES_IN`).
    pub ttl: Duration,
    /// Refresh tokens' lifetime from their issue (`REFRESH_EXPIRES_IN`).
    pub refresh_ttl: Duration,
}

/// Parses a token lifetime: plain seconds (`3600`) or a number with `s`, `m`, `h` or `d`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (text.get(..i).unwrap_or(""), c),
        _ => (text, 's'),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("must look like 3600, 30m, 24h or 7d, got {text:?}"))?;
    let seconds = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86_400),
        _ => None,
    }
    .ok_or_else(|| format!("must look like 3600, 30m, 24h or 7d, got {text:?}"))?;
    if seconds == 0 || seconds > 30 * 86_400 {
        return Err("must be between 1 second and 30 days".into());
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
    /// The header names no key this verifier holds (or none at all).
    #[error("token rejected: unknown or missing kid")]
    UnknownKey,
    /// The header's algorithm is not EdDSA.
    #[error("token rejected: algorithm {0:?} is not accepted")]
    Algorithm(Algorithm),
    #[error("token claims are invalid")]
    Invalid,
    #[error("could not sign the token")]
    Signing(#[source] jsonwebtoken::errors::Error),
}

/// The longest token accepted: ours are ~400 bytes; anything much larger is not worth parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Verifies tokens with public keys only.
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(public_keys: &[PublicKey], settings: &TokenSettings) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 30;
        let keys = public_keys
            .iter()
            .map(|key| (key.kid.clone(), DecodingKey::from_ed_der(&key.raw)))
            .collect();
        Self { keys, validation }
    }

    /// Checks algorithm (EdDSA only), `kid`, signature, expiry, issuer and audience, and
    /// returns the claims.
    pub fn verify(&self, token: &str) -> Result<AuthClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Rejected)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm(header.alg));
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        let data = jsonwebtoken::decode::<AuthClaims>(token, key, &self.validation)
            .map_err(TokenError::Rejected)?;
        data.claims.user_id()?;
        Ok(data.claims)
    }
}

/// Signs tokens with the private key. Only the issuing function builds one.
pub struct TokenIssuer {
    key: EncodingKey,
    kid: String,
    settings: TokenSettings,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    pub fn new(key: &SigningKey, settings: TokenSettings) -> Self {
        Self {
            key: EncodingKey::from_ed_der(&key.pkcs8),
            kid: key.public.kid.clone(),
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
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let token =
            jsonwebtoken::encode(&header, &claims, &self.key).map_err(TokenError::Signing)?;
        Ok(IssuedToken {
            token,
            expires_in: ttl,
            claims,
        })
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

    fn settings() -> TokenSettings {
        TokenSettings {
            issuer: "zhixuan".into(),
            audience: "zhixuan-api".into(),
            ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(86_400),
        }
    }

    fn pair() -> (TokenIssuer, TokenVerifier, SigningKey) {
        let key = SigningKey::generate().unwrap();
        (
            TokenIssuer::new(&key, settings()),
            TokenVerifier::new(std::slice::from_ref(key.public_key()), &settings()),
            key,
        )
    }

    fn sample() -> (UserId, Email) {
        (UserId::generate(), Email::parse("a@example.com").unwrap())
    }

    #[test]
    fn keys_round_trip_and_never_print() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::parse(&key.to_base64()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            key.to_base64()
        );
        assert_eq!(
            SigningKey::parse(&pem).unwrap().public_key(),
            key.public_key()
        );
        assert!(!format!("{key:?}").contains(&key.to_base64()[..16]));
        let public = PublicKey::parse(key.public_key().encoded()).unwrap();
        assert_eq!(public.kid(), key.public_key().kid());
        assert!(SigningKey::parse("not a key").is_err());
        assert!(PublicKey::parse("AAAA").is_err());
        assert!(PublicKey::parse_list(" , ").is_err());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 8037, appendix A.3: the thumbprint of the example Ed25519 key.
        let key = PublicKey::parse("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
        assert_eq!(key.kid(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn round_trip() {
        let (issuer, verifier, _) = pair();
        let (id, email) = sample();
        let issued = issuer
            .issue_at(&id, &email, Role::Admin, Timestamp::now().unix_seconds())
            .unwrap();
        let claims = verifier.verify(&issued.token).unwrap();
        assert_eq!(claims.sub, id.as_str());
        assert_eq!(claims.role, Role::Admin);
        assert_eq!(claims.exp - claims.iat, 3600);
    }

    #[test]
    fn two_public_keys_verify_during_a_rotation() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let verifier = TokenVerifier::new(
            &[old.public_key().clone(), new.public_key().clone()],
            &settings(),
        );
        let (id, email) = sample();
        let now = Timestamp::now().unix_seconds();
        for key in [&old, &new] {
            let token = TokenIssuer::new(key, settings())
                .issue_at(&id, &email, Role::Customer, now)
                .unwrap();
            assert!(verifier.verify(&token.token).is_ok());
        }
    }

    #[test]
    fn rejects_expired_foreign_unsigned_and_misaddressed_tokens() {
        let (issuer, verifier, key) = pair();
        let (id, email) = sample();
        let now = Timestamp::now().unix_seconds();

        let expired = issuer
            .issue_at(&id, &email, Role::Customer, now - 7200)
            .unwrap();
        assert!(verifier.verify(&expired.token).is_err(), "expired");

        let (other, _, _) = pair();
        let foreign = other.issue_at(&id, &email, Role::Customer, now).unwrap();
        assert!(
            matches!(verifier.verify(&foreign.token), Err(TokenError::UnknownKey)),
            "unknown kid"
        );

        for (issuer_name, audience) in [("zhixuan", "someone-else"), ("evil", "zhixuan-api")] {
            let t = TokenIssuer::new(
                &key,
                TokenSettings {
                    issuer: issuer_name.into(),
                    audience: audience.into(),
                    ttl: Duration::from_secs(60),
                    refresh_ttl: Duration::from_secs(600),
                },
            )
            .issue_at(&id, &email, Role::Customer, now)
            .unwrap();
            assert!(
                verifier.verify(&t.token).is_err(),
                "{issuer_name} {audience}"
            );
        }

        let payload = issuer
            .issue_at(&id, &email, Role::Admin, now)
            .unwrap()
            .token
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
        assert!(verifier.verify(&none).is_err(), "alg none");
        assert!(verifier.verify("garbage").is_err());
        assert!(verifier.verify(&"a.b.c".repeat(2000)).is_err());
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_rejected() {
        let (issuer, verifier, key) = pair();
        let (id, email) = sample();
        let claims = issuer
            .issue_at(&id, &email, Role::Admin, Timestamp::now().unix_seconds())
            .unwrap()
            .claims;
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.public_key().kid().to_owned());
        for secret in [
            key.public_key().encoded().as_bytes(),
            key.public_key().raw.as_slice(),
        ] {
            let forged =
                jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap();
            assert!(matches!(
                verifier.verify(&forged),
                Err(TokenError::Algorithm(Algorithm::HS256))
            ));
        }
    }

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("forever").is_err());
        assert!(parse_ttl("é").is_err());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }
}
