//! Sessions: one login and the refresh tokens that continue it. A session holds only the hash
//! of its one valid refresh token; every refresh replaces it (rotation), so each token is good
//! once. Presenting a token of a session that is no longer its current one means a token was
//! copied: the whole session (the token family) is revoked.

use std::fmt;

use crate::{Timestamp, UserId};

/// A session's opaque identifier: a UUIDv4 (random: it is part of the refresh token and must
/// not be guessable from the time of login).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        uuid::Uuid::try_parse(text)
            .map(|id| Self(id.hyphenated().to_string()))
            .map_err(|_| "must be a session id (UUID)".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The SHA-256 of a refresh token, lower-case hex: what is stored instead of the token.
/// Compared in constant time.
#[derive(Clone, Eq)]
pub struct TokenHash(String);

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl TokenHash {
    /// A hash as computed by `zx_auth` (64 lower-case hex digits).
    pub fn from_hex(hex: &str) -> Result<Self, String> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(hex.to_owned()))
        } else {
            Err("must be 64 lower-case hex digits".to_owned())
        }
    }

    /// A SHA-256 digest (32 bytes), hex-encoded.
    pub fn from_sha256(digest: &[u8]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not secret (a hash of a 256-bit random value), but kept out of logs all the same.
        f.write_str("TokenHash(..)")
    }
}

/// How many used tokens a session remembers, to recognise one presented again.
pub const REMEMBERED_TOKENS: usize = 16;

/// The longest a session lasts, however often it is refreshed.
pub const MAX_SESSION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// What a presented token is to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// The one token that continues the session.
    Current,
    /// A token of this session that was already used: a copy is in someone's hands.
    Used,
    /// Not a token of this session (or one too old to remember).
    Unknown,
}

/// One login of a user and its current refresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    /// The hash of the one refresh token that continues this session.
    pub token_hash: TokenHash,
    /// The user's [`crate::User::session_epoch`] at login: a session is valid only while the
    /// user's epoch is still this one (a password or role change moves it on).
    pub user_epoch: u64,
    pub created_at: Timestamp,
    /// When the current refresh token stops being accepted.
    pub expires_at: Timestamp,
    /// Logged out, or revoked because a used token was presented again.
    pub revoked: bool,
    /// The hashes of the last [`REMEMBERED_TOKENS`] tokens used, oldest first.
    pub used_hashes: Vec<TokenHash>,
}

impl Session {
    /// The session after a refresh: the new token's hash and expiry (never past
    /// [`MAX_SESSION_LIFETIME`] from the login), the spent one remembered.
    pub fn rotated(&self, token_hash: TokenHash, expires_at: Timestamp) -> Self {
        let mut used_hashes = self.used_hashes.clone();
        used_hashes.push(self.token_hash.clone());
        let excess = used_hashes.len().saturating_sub(REMEMBERED_TOKENS);
        used_hashes.drain(..excess);
        Self {
            token_hash,
            expires_at: expires_at.min(self.last_expiry()),
            used_hashes,
            ..self.clone()
        }
    }

    /// The latest any token of this session may expire.
    pub fn last_expiry(&self) -> Timestamp {
        self.created_at.plus(MAX_SESSION_LIFETIME)
    }

    /// Whether `hash` is this session's current token, a used one, or neither.
    pub fn recognise(&self, hash: &TokenHash) -> Presented {
        if self.token_hash == *hash {
            Presented::Current
        } else if self.used_hashes.iter().any(|used| used == hash) {
            Presented::Used
        } else {
            Presented::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(seed: u8) -> TokenHash {
        TokenHash::from_hex(&format!("{seed:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn rotation_remembers_the_last_sixteen_tokens_and_caps_the_lifetime() {
        let created = Timestamp::now();
        let mut session = Session {
            id: SessionId::generate(),
            user_id: UserId::generate(),
            token_hash: hash(0),
            user_epoch: 0,
            created_at: created,
            expires_at: created.plus(std::time::Duration::from_secs(60)),
            revoked: false,
            used_hashes: Vec::new(),
        };
        for i in 1..=20u8 {
            session = session.rotated(hash(i), created.plus(MAX_SESSION_LIFETIME * 2));
        }
        assert_eq!(session.recognise(&hash(20)), Presented::Current);
        assert_eq!(session.recognise(&hash(19)), Presented::Used);
        assert_eq!(session.recognise(&hash(4)), Presented::Used);
        assert_eq!(session.recognise(&hash(3)), Presented::Unknown);
        assert_eq!(session.recognise(&hash(99)), Presented::Unknown);
        assert_eq!(session.used_hashes.len(), REMEMBERED_TOKENS);
        assert_eq!(session.expires_at, session.last_expiry());
    }
}
