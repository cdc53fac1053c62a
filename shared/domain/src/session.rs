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
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash(String);

impl TokenHash {
    /// A hash as computed by `zx_auth` (64 lower-case hex digits).
    pub fn from_hex(hex: &str) -> Result<Self, String> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(hex.to_owned()))
        } else {
            Err("must be 64 lower-case hex digits".to_owned())
        }
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
}

impl Session {
    /// The session after a refresh: the new token's hash and expiry, everything else kept.
    pub fn rotated(&self, token_hash: TokenHash, expires_at: Timestamp) -> Self {
        Self {
            token_hash,
            expires_at,
            ..self.clone()
        }
    }
}
