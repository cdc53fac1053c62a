//! Users: identity, credentials and role, as types that only hold valid values.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// A user's opaque identifier: a UUIDv7 in canonical lower-case form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// A fresh, time-ordered identifier.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        uuid::Uuid::try_parse(text.trim())
            .map(|id| Self(id.hyphenated().to_string()))
            .map_err(|_| "must be a user id (UUID)".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// An e-mail address, normalised (trimmed, lower-case): two spellings of one address are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub const MAX_LEN: usize = 254;

    pub fn parse(text: &str) -> Result<Self, String> {
        let email = text.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} bytes", Self::MAX_LEN));
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("must not contain spaces or control characters".into());
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an e-mail address (name@domain)".into());
        };
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err("must be an e-mail address (name@domain)".into());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 3–32 characters of letters, digits, `_`, `-` or `.` (any script).
/// Unique without regard to case: [`Username::key`] is what uniqueness is checked on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub const MIN_CHARS: usize = 3;
    pub const MAX_CHARS: usize = 32;

    pub fn parse(text: &str) -> Result<Self, String> {
        let name = text.trim();
        let chars = name.chars().count();
        if !(Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars) {
            return Err(format!(
                "must be {} to {} characters",
                Self::MIN_CHARS,
                Self::MAX_CHARS
            ));
        }
        if !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            return Err("may contain only letters, digits, '_', '-' and '.'".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded form that uniqueness is enforced on.
    pub fn key(&self) -> String {
        self.0.to_lowercase()
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A plaintext password as submitted: 8–72 bytes (bcrypt's limit; longer ones are rejected,
/// never truncated). Its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_BYTES: usize = 8;
    pub const MAX_BYTES: usize = 72;

    pub fn parse(text: &str) -> Result<Self, String> {
        let len = text.len();
        if len < Self::MIN_BYTES {
            return Err(format!("must be at least {} bytes", Self::MIN_BYTES));
        }
        if len > Self::MAX_BYTES {
            return Err(format!(
                "must be at most {} bytes (bcrypt's limit)",
                Self::MAX_BYTES
            ));
        }
        Ok(Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(**redacted**)")
    }
}

/// A bcrypt hash as stored. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Wraps a stored hash; only the prefix is checked, the hasher verifies the rest.
    pub fn from_stored(hash: String) -> Result<Self, String> {
        if hash.starts_with("$2") && hash.len() == 60 {
            Ok(Self(hash))
        } else {
            Err("not a bcrypt hash".into())
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(**redacted**)")
    }
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "customer" => Ok(Self::Customer),
            "admin" => Ok(Self::Admin),
            _ => Err("must be \"customer\" or \"admin\"".into()),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered user. `version` increases by one on every stored change (optimistic locking).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub username: Username,
    pub email: Email,
    pub password_hash: PasswordHash,
    pub role: Role,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub version: u64,
    /// Moved on to revoke every session (refresh token) of this user at once: a session is
    /// valid only while this is still the epoch it was created in.
    pub session_epoch: u64,
}

impl User {
    /// A new user with a fresh id, version 1.
    pub fn new(username: Username, email: Email, password_hash: PasswordHash, role: Role) -> Self {
        let now = Timestamp::now();
        Self {
            id: UserId::generate(),
            username,
            email,
            password_hash,
            role,
            created_at: now,
            updated_at: now,
            version: 1,
            session_epoch: 0,
        }
    }

    /// The next version with every session revoked (a password or role change).
    pub fn with_sessions_revoked(mut self) -> Self {
        self.session_epoch += 1;
        self
    }

    /// The next version of this user, to be stored with [`crate::UserWriter::update`].
    pub fn next_version(&self) -> Self {
        Self {
            updated_at: Timestamp::now().max(self.updated_at),
            version: self.version + 1,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse("  Li.Wei@Example.COM ").unwrap().as_str(),
            "li.wei@example.com"
        );
    }

    #[test]
    fn email_rejects_malformed_addresses() {
        for bad in [
            "",
            "   ",
            "no-at-sign",
            "@example.com",
            "a@",
            "a@b",
            "a@b..com",
            "a b@example.com",
            "a@b@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn username_bounds_and_alphabet() {
        assert!(Username::parse("li").is_err());
        assert!(Username::parse("李小龙").is_ok());
        assert!(Username::parse("wei_li-2.0").is_ok());
        assert!(Username::parse(&"a".repeat(33)).is_err());
        assert!(Username::parse(&"a".repeat(32)).is_ok());
        assert!(Username::parse("drop table;").is_err());
        assert_eq!(Username::parse("WeiLi").unwrap().key(), "weili");
    }

    #[test]
    fn password_is_8_to_72_bytes_never_truncated() {
        assert!(Password::parse("1234567").is_err());
        assert!(Password::parse("12345678").is_ok());
        assert!(Password::parse(&"x".repeat(72)).is_ok());
        let err = Password::parse(&"x".repeat(73)).unwrap_err();
        assert!(err.contains("72"), "{err}");
        // 24 three-byte characters are 72 bytes; one more is 75.
        assert!(Password::parse(&"密".repeat(24)).is_ok());
        assert!(Password::parse(&"密".repeat(25)).is_err());
    }

    #[test]
    fn secrets_never_print() {
        let password = Password::parse("hunter2hunter2").unwrap();
        assert!(!format!("{password:?}").contains("hunter2"));
        let hash = PasswordHash::from_stored(format!("$2b$10${}", "a".repeat(53))).unwrap();
        assert!(!format!("{hash:?}").contains("aaaa"));
    }

    #[test]
    fn user_id_is_canonical() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(&id.as_str().to_uppercase()).unwrap(), id);
        assert!(UserId::parse("not-an-id").is_err());
    }

    #[test]
    fn role_parses_only_known_roles() {
        assert_eq!(Role::parse("admin").unwrap(), Role::Admin);
        assert!(Role::parse("root").is_err());
        assert!(Role::parse("Admin").is_err());
    }
}
