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

/// How many used tokens a session remembers, to recognise one presented again: 64 rotations,
/// 16 hours of continuous use with 15-minute access tokens. An older token is refused as
/// unknown (never accepted), only not recognised as a replay.
pub const REMEMBERED_TOKENS: usize = 64;

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

/// What the store says now about the session an access token names and its user: what the
/// edge checks on admin routes and writes, so a logout, a password or e-mail change, a role
/// change or a demotion stops an access token before it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// The session's user.
    pub user_id: UserId,
    /// The user's epoch when the session began.
    pub session_epoch: u64,
    pub revoked: bool,
    /// The user's epoch now.
    pub user_epoch: u64,
    /// The user's role now.
    pub role: crate::Role,
}

impl Standing {
    /// The role a token of `user` with epoch `token_epoch` may act with now, or `None` when
    /// its session no longer stands (revoked, another user's, or begun before the user's epoch
    /// moved on).
    pub fn role_for(&self, user: &UserId, token_epoch: u64) -> Option<crate::Role> {
        let stands = self.user_id == *user
            && !self.revoked
            && self.session_epoch == self.user_epoch
            && token_epoch == self.user_epoch;
        stands.then_some(self.role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_stands_only_unrevoked_for_its_user_at_the_current_epoch() {
        let user = UserId::generate();
        let standing = Standing {
            user_id: user.clone(),
            session_epoch: 2,
            revoked: false,
            user_epoch: 2,
            role: crate::Role::Admin,
        };
        assert_eq!(standing.role_for(&user, 2), Some(crate::Role::Admin));
        assert_eq!(standing.role_for(&UserId::generate(), 2), None);
        assert_eq!(standing.role_for(&user, 1), None);
        let moved_on = Standing {
            user_epoch: 3,
            ..standing.clone()
        };
        assert_eq!(moved_on.role_for(&user, 2), None);
        assert_eq!(
            moved_on.role_for(&user, 3),
            None,
            "the session began before"
        );
        let revoked = Standing {
            revoked: true,
            ..standing
        };
        assert_eq!(revoked.role_for(&user, 2), None);
    }

    fn hash(seed: u8) -> TokenHash {
        TokenHash::from_hex(&format!("{seed:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn rotation_remembers_the_last_tokens_and_caps_the_lifetime() {
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
        for i in 1..=70u8 {
            session = session.rotated(hash(i), created.plus(MAX_SESSION_LIFETIME * 2));
        }
        assert_eq!(session.recognise(&hash(70)), Presented::Current);
        assert_eq!(session.recognise(&hash(69)), Presented::Used);
        assert_eq!(session.recognise(&hash(6)), Presented::Used);
        assert_eq!(session.recognise(&hash(5)), Presented::Unknown);
        assert_eq!(session.recognise(&hash(99)), Presented::Unknown);
        assert_eq!(session.used_hashes.len(), REMEMBERED_TOKENS);
        assert_eq!(session.expires_at, session.last_expiry());
    }
}
