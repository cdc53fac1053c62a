//! Access tokens. Deployed, they are signed by a key that never leaves AWS KMS (an ECC_NIST_P256
//! key: ES256, see `docs/decisions.md`), through a [`RemoteSigner`] only the issuing functions
//! are granted; in tests and tools an in-memory Ed25519 key can sign (EdDSA). Every function
//! verifies with public keys only ([`TokenVerifier`]), chosen by the token's `kid`, so two keys
//! can be live during a rotation. Each key verifies only its own algorithm (EdDSA for Ed25519,
//! ES256 for P-256): no other algorithm is accepted, and none for another key. `exp`, `iat`,
//! `iss`, `aud` and `sub` are required and checked.
//!
//! Key formats (environment-friendly, one line each):
//! - in-memory private key (`JWT_PRIVATE_KEY`, tests and tools only): Ed25519 PKCS#8 v1 or v2,
//!   as PEM (`openssl genpkey -algorithm ed25519`) or as the base64 of its DER
//!   (`zx-admin jwt-keygen`);
//! - public keys (`JWT_PUBLIC_KEYS`): comma-separated base64url: a raw Ed25519 key (32 bytes,
//!   a JWK's `x`) or an uncompressed P-256 point (65 bytes, `04 || x || y`; the SPKI DER KMS's
//!   `GetPublicKey` answers is accepted too).
//!
//! A key's `kid` is its RFC 7638 JWK thumbprint, so it never needs configuring.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zx_domain::{Email, Role, SessionId, Timestamp, User, UserId};

/// The RFC 7638 thumbprint of a JWK (base64url of SHA-256 over its canonical members).
fn thumbprint(jwk: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jwk.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// The DER prefix of a P-256 public key's SubjectPublicKeyInfo (id-ecPublicKey, prime256v1),
/// before its 65-byte uncompressed point.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// The DER prefix of an Ed25519 public key's SubjectPublicKeyInfo, before its 32 bytes.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A verification key: Ed25519 (EdDSA) or P-256 (ES256), and its `kid`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Ed25519: the 32 key bytes; P-256: the 65-byte uncompressed point.
    raw: Vec<u8>,
    /// base64url of `raw`: what `JWT_PUBLIC_KEYS` holds.
    encoded: String,
    kid: String,
    algorithm: Algorithm,
}

impl PublicKey {
    fn from_raw(raw: &[u8]) -> Result<Self, String> {
        let encoded = URL_SAFE_NO_PAD.encode(raw);
        let (jwk, algorithm) = match raw {
            _ if raw.len() == 32 => (
                format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{encoded}"}}"#),
                Algorithm::EdDSA,
            ),
            [0x04, point @ ..] if point.len() == 64 => {
                let (x, y) = point.split_at(32);
                let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
                (
                    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#),
                    Algorithm::ES256,
                )
            }
            _ => {
                return Err(
                    "a public key is 32 bytes (Ed25519) or a 65-byte uncompressed P-256 point"
                        .into(),
                );
            }
        };
        Ok(Self {
            raw: raw.to_vec(),
            kid: thumbprint(&jwk),
            encoded,
            algorithm,
        })
    }

    /// A public key as SubjectPublicKeyInfo DER (what KMS's `GetPublicKey` answers).
    pub fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        if let Some(point) = der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            return Self::from_raw(point);
        }
        if let Some(key) = der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            return Self::from_raw(key);
        }
        Err("not a P-256 or Ed25519 SubjectPublicKeyInfo".into())
    }

    /// A base64url (padding optional) public key: raw Ed25519, a P-256 point, or either's SPKI
    /// DER.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches('=');
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| "a public key must be base64url".to_owned())?;
        Self::from_raw(&raw).or_else(|error| Self::from_spki_der(&raw).map_err(|_| error))
    }

    /// The algorithm tokens signed by this key's private half use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    fn decoding_key(&self) -> Result<DecodingKey, String> {
        match self.algorithm {
            Algorithm::EdDSA => Ok(DecodingKey::from_ed_der(&self.raw)),
            _ => {
                let point = self.raw.get(1..).ok_or("short point")?;
                let (x, y) = point.split_at(32);
                DecodingKey::from_ec_components(
                    &URL_SAFE_NO_PAD.encode(x),
                    &URL_SAFE_NO_PAD.encode(y),
                )
                .map_err(|e| e.to_string())
            }
        }
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
        &self.encoded
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
    /// The session the token continues: the edge checks it is still standing on admin routes
    /// and writes. Absent from tokens issued outside a session (tests, tools): those routes
    /// refuse them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The user's session epoch when the token was issued.
    #[serde(default)]
    pub sep: u64,
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
    /// The remote signer (KMS) failed or answered something unusable.
    #[error("the signing service failed: {0}")]
    Remote(RemoteError),
}

/// The longest token accepted: ours are ~400 bytes; anything much larger is not worth parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Verifies tokens with public keys only.
pub struct TokenVerifier {
    /// kid → the key and the validation of its one algorithm.
    keys: HashMap<String, (DecodingKey, Validation)>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A key whose point cannot be used is left out (and logged): tokens it names are refused.
    pub fn new(public_keys: &[PublicKey], settings: &TokenSettings) -> Self {
        let validation = |algorithm| {
            let mut validation = Validation::new(algorithm);
            validation.set_issuer(&[&settings.issuer]);
            validation.set_audience(&[&settings.audience]);
            validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            // Clock skew between functions is small (Lambda hosts keep NTP time): 5 s at most,
            // so an expired token is refused within seconds.
            validation.leeway = 5;
            validation
        };
        let keys = public_keys
            .iter()
            .filter_map(|key| match key.decoding_key() {
                Ok(decoding) => Some((key.kid.clone(), (decoding, validation(key.algorithm)))),
                Err(error) => {
                    tracing::error!(kid = %key.kid, %error, "unusable public key left out");
                    None
                }
            })
            .collect();
        Self { keys }
    }

    /// Checks algorithm (EdDSA only), `kid`, signature, expiry, issuer and audience, and
    /// returns the claims.
    pub fn verify(&self, token: &str) -> Result<AuthClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let header = jsonwebtoken::decode_header(token).map_err(TokenError::Rejected)?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let (key, validation) = header
            .kid
            .as_deref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or(TokenError::UnknownKey)?;
        // Each key verifies its own algorithm only (no EdDSA token for a P-256 key).
        if !validation.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let data = jsonwebtoken::decode::<AuthClaims>(token, key, validation)
            .map_err(TokenError::Rejected)?;
        data.claims.user_id()?;
        Ok(data.claims)
    }
}

/// Why a remote signer failed: `transient` when retrying may succeed (a timeout, throttling,
/// KMS unavailable), not when the key or the grant is wrong (access denied, a disabled key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RemoteError {
    pub transient: bool,
    pub message: String,
}

impl RemoteError {
    /// A failure retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            transient: false,
            message: message.into(),
        }
    }
}

/// Signs a token's signing input where the private key lives (AWS KMS): the functions never
/// hold it.
#[async_trait::async_trait]
pub trait RemoteSigner: Send + Sync {
    /// The public key its signatures verify with (asked once, then remembered by the caller).
    async fn public_key(&self) -> Result<PublicKey, RemoteError>;
    /// The JOSE signature of `message`: 64 bytes, `R || S` for ES256.
    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, RemoteError>;
}

/// Where an issuer's signatures come from.
enum Signer {
    /// An in-memory Ed25519 key (tests and tools).
    Local { key: EncodingKey, kid: String },
    /// A key that stays in KMS; its public key (for the `kid` and the algorithm) once known.
    Remote {
        signer: Arc<dyn RemoteSigner>,
        public: tokio::sync::OnceCell<PublicKey>,
    },
}

/// Signs tokens. Only the issuing functions build one.
pub struct TokenIssuer {
    signer: Signer,
    settings: TokenSettings,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kid = match &self.signer {
            Signer::Local { kid, .. } => Some(kid.as_str()),
            Signer::Remote { public, .. } => public.get().map(PublicKey::kid),
        };
        f.debug_struct("TokenIssuer")
            .field("kid", &kid)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer signing with an in-memory Ed25519 key.
    pub fn new(key: &SigningKey, settings: TokenSettings) -> Self {
        Self {
            signer: Signer::Local {
                key: EncodingKey::from_ed_der(&key.pkcs8),
                kid: key.public.kid.clone(),
            },
            settings,
        }
    }

    /// An issuer whose signatures come from `signer` (KMS).
    pub fn remote(signer: Arc<dyn RemoteSigner>, settings: TokenSettings) -> Self {
        Self {
            signer: Signer::Remote {
                signer,
                public: tokio::sync::OnceCell::new(),
            },
            settings,
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// Signs a token for `user` in `session`, valid for the configured lifetime from now.
    pub async fn issue(&self, user: &User, session: &SessionId) -> Result<IssuedToken, TokenError> {
        let mut claims = self.claims(
            &user.id,
            &user.email,
            user.role,
            Timestamp::now().unix_seconds(),
        );
        claims.sid = Some(session.to_string());
        claims.sep = user.session_epoch;
        match &self.signer {
            Signer::Local { .. } => self.sign(claims),
            Signer::Remote { signer, public } => {
                let public = public
                    .get_or_try_init(|| signer.public_key())
                    .await
                    .map_err(TokenError::Remote)?;
                let mut header = Header::new(public.algorithm());
                header.kid = Some(public.kid().to_owned());
                let json = |value: &dyn erased::Json| value.to_json();
                let input = format!(
                    "{}.{}",
                    URL_SAFE_NO_PAD.encode(json(&header)?),
                    URL_SAFE_NO_PAD.encode(json(&claims)?)
                );
                let signature = signer
                    .sign(input.as_bytes())
                    .await
                    .map_err(TokenError::Remote)?;
                let ttl = u64::try_from(claims.exp.saturating_sub(claims.iat)).unwrap_or(0);
                Ok(IssuedToken {
                    token: format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)),
                    expires_in: ttl,
                    claims,
                })
            }
        }
    }

    /// Signs a token of no session as if issued at `iat` (seconds since the epoch), with an
    /// in-memory key only (tests and tools): good for reads, refused by the routes that check
    /// a session's standing.
    pub fn issue_at(
        &self,
        id: &UserId,
        email: &Email,
        role: Role,
        iat: i64,
    ) -> Result<IssuedToken, TokenError> {
        self.sign(self.claims(id, email, role, iat))
    }

    fn claims(&self, id: &UserId, email: &Email, role: Role, iat: i64) -> AuthClaims {
        let ttl = self.settings.ttl.as_secs();
        AuthClaims {
            sub: id.to_string(),
            email: email.to_string(),
            role,
            iat,
            exp: iat.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            sid: None,
            sep: 0,
        }
    }

    /// Signs `claims` with this issuer's in-memory key (an error for a remote one).
    pub fn sign(&self, claims: AuthClaims) -> Result<IssuedToken, TokenError> {
        let Signer::Local { key, kid } = &self.signer else {
            return Err(TokenError::Remote(RemoteError::permanent(
                "a KMS key signs only through issue()",
            )));
        };
        let ttl = u64::try_from(claims.exp.saturating_sub(claims.iat)).unwrap_or(0);
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, key).map_err(TokenError::Signing)?;
        Ok(IssuedToken {
            token,
            expires_in: ttl,
            claims,
        })
    }
}

/// JSON of a header or of claims, for a remotely signed token.
mod erased {
    pub trait Json {
        fn to_json(&self) -> Result<Vec<u8>, super::TokenError>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Result<Vec<u8>, super::TokenError> {
            serde_json::to_vec(self).map_err(|e| {
                super::TokenError::Remote(super::RemoteError::permanent(e.to_string()))
            })
        }
    }
}

/// The JOSE form (`R || S`, `size` bytes each) of a DER-encoded ECDSA signature (what KMS's
/// `Sign` answers): `SEQUENCE { INTEGER r, INTEGER s }`.
pub fn ecdsa_der_to_jose(der: &[u8], size: usize) -> Result<Vec<u8>, String> {
    let invalid = || "not a DER ECDSA signature".to_owned();
    fn length(bytes: &[u8]) -> Option<(usize, &[u8])> {
        let (&first, rest) = bytes.split_first()?;
        if first < 0x80 {
            Some((usize::from(first), rest))
        } else if first == 0x81 {
            let (&len, rest) = rest.split_first()?;
            Some((usize::from(len), rest))
        } else {
            None
        }
    }
    fn integer(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
        let (&tag, rest) = bytes.split_first()?;
        if tag != 0x02 {
            return None;
        }
        let (len, rest) = length(rest)?;
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    let (&tag, rest) = der.split_first().ok_or_else(invalid)?;
    if tag != 0x30 {
        return Err(invalid());
    }
    let (len, body) = length(rest).ok_or_else(invalid)?;
    if body.len() != len {
        return Err(invalid());
    }
    let (r, rest) = integer(body).ok_or_else(invalid)?;
    let (s, rest) = integer(rest).ok_or_else(invalid)?;
    if !rest.is_empty() {
        return Err(invalid());
    }
    let mut out = vec![0u8; 2 * size];
    for (value, offset) in [(r, 0), (s, size)] {
        // Strip the sign byte; left-pad to `size`.
        let value = match value {
            [0, rest @ ..] if !rest.is_empty() => rest,
            other => other,
        };
        if value.len() > size {
            return Err(invalid());
        }
        let start = offset + size - value.len();
        out.get_mut(start..offset + size)
            .ok_or_else(invalid)?
            .copy_from_slice(value);
    }
    Ok(out)
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

    /// A P-256 key in memory that signs as KMS does: DER signatures, turned into JOSE by
    /// [`ecdsa_der_to_jose`].
    struct P256 {
        pair: aws_lc_rs::signature::EcdsaKeyPair,
        spki: Vec<u8>,
    }

    impl P256 {
        fn generate() -> Self {
            use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
            let mut spki = P256_SPKI_PREFIX.to_vec();
            spki.extend_from_slice(pair.public_key().as_ref());
            Self { pair, spki }
        }
    }

    #[async_trait::async_trait]
    impl RemoteSigner for P256 {
        async fn public_key(&self) -> Result<PublicKey, RemoteError> {
            PublicKey::from_spki_der(&self.spki).map_err(RemoteError::permanent)
        }
        async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, RemoteError> {
            let der = self
                .pair
                .sign(&aws_lc_rs::rand::SystemRandom::new(), message)
                .map_err(|e| RemoteError::permanent(e.to_string()))?;
            ecdsa_der_to_jose(der.as_ref(), 32).map_err(RemoteError::permanent)
        }
    }

    #[tokio::test]
    async fn a_remote_p256_signer_issues_es256_tokens_only_its_key_verifies() {
        let remote = Arc::new(P256::generate());
        let public = remote.public_key().await.unwrap();
        assert_eq!(public.algorithm(), Algorithm::ES256);
        assert_eq!(PublicKey::parse(public.encoded()).unwrap(), public);
        let issuer = TokenIssuer::remote(remote.clone(), settings());
        let user = User::new(
            zx_domain::Username::parse("signer").unwrap(),
            Email::parse("s@example.com").unwrap(),
            zx_domain::PasswordHash::from_stored(format!("$2b$04${}", "a".repeat(53))).unwrap(),
            Role::Customer,
        );
        let session = SessionId::generate();
        for _ in 0..20 {
            // DER integers of every length (leading zeros, sign bytes) convert.
            let token = issuer.issue(&user, &session).await.unwrap().token;
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.alg, Algorithm::ES256);
            assert_eq!(header.kid.as_deref(), Some(public.kid()));
            let claims = TokenVerifier::new(std::slice::from_ref(&public), &settings())
                .verify(&token)
                .unwrap();
            assert_eq!(claims.sid.as_deref(), Some(session.as_str()));
            // Another key's verifier refuses it; an in-memory issuer cannot sign remotely.
            let other = SigningKey::generate().unwrap();
            assert!(
                TokenVerifier::new(std::slice::from_ref(other.public_key()), &settings())
                    .verify(&token)
                    .is_err()
            );
        }
        assert!(matches!(
            issuer.issue_at(&user.id, &user.email, Role::Admin, 0),
            Err(TokenError::Remote(_))
        ));
    }

    #[test]
    fn an_eddsa_token_under_a_p256_kid_is_refused() {
        let p256 = PublicKey::from_spki_der(&P256::generate().spki).unwrap();
        let ed = SigningKey::generate().unwrap();
        let claims = TokenIssuer::new(&ed, settings())
            .issue_at(
                &UserId::generate(),
                &Email::parse("a@example.com").unwrap(),
                Role::Admin,
                Timestamp::now().unix_seconds(),
            )
            .unwrap()
            .claims;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(p256.kid().to_owned());
        let forged =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&ed.pkcs8)).unwrap();
        let verifier = TokenVerifier::new(&[p256], &settings());
        assert!(matches!(
            verifier.verify(&forged),
            Err(TokenError::Algorithm(Algorithm::EdDSA))
        ));
    }

    /// Finding 7: at most 5 s of leeway on `exp` (was 30 s).
    #[test]
    fn an_expired_token_is_refused_after_five_seconds_of_leeway() {
        let (issuer, verifier, _) = pair();
        let (id, email) = sample();
        let ttl = i64::try_from(settings().ttl.as_secs()).unwrap();
        let now = Timestamp::now().unix_seconds();
        let expired_ago = |seconds: i64| {
            issuer
                .issue_at(&id, &email, Role::Customer, now - ttl - seconds)
                .unwrap()
                .token
        };
        assert!(
            verifier.verify(&expired_ago(2)).is_ok(),
            "within the leeway"
        );
        assert!(verifier.verify(&expired_ago(7)).is_err(), "past the leeway");
    }

    #[test]
    fn der_signatures_become_fixed_width() {
        // r with a sign byte, s short: padded and stripped to 32 bytes each.
        let mut der = vec![0x30, 0x26, 0x02, 0x21, 0x00];
        der.extend([0x80; 32]);
        der.extend([0x02, 0x01, 0x05]);
        let jose = ecdsa_der_to_jose(&der, 32).unwrap();
        assert_eq!(jose.len(), 64);
        assert_eq!(&jose[..32], &[0x80; 32]);
        assert_eq!(&jose[32..63], &[0; 31]);
        assert_eq!(jose[63], 5);
        for bad in [
            &[][..],
            &[0x30, 0x00],
            &[0x31, 0x03, 0x02, 0x01, 0x01],
            &der[..10],
        ] {
            assert!(ecdsa_der_to_jose(bad, 32).is_err(), "{bad:?}");
        }
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
