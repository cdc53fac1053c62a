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

    /// An address as RFC 5321 writes one: a dot-string local part of `atext` characters
    /// (ASCII letters, digits and ``!#$%&'*+-/=?^_`{|}~``; no quoted strings), at most 64 bytes,
    /// and a domain of letter-digit-hyphen labels (an internationalised domain in its `xn--`
    /// form). Nothing invisible, no markup characters, no other script: what is stored is what
    /// every mail system and every screen shows alike.
    pub fn parse(text: &str) -> Result<Self, String> {
        let email = text.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} bytes", Self::MAX_LEN));
        }
        if !email.is_ascii() {
            return Err(
                "must be an ASCII e-mail address (an internationalised domain in its xn-- form)"
                    .into(),
            );
        }
        if email
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err("must not contain spaces or control characters".into());
        }
        let Some((local, domain)) = email.split_once('@') else {
            return Err("must be an e-mail address (name@domain)".into());
        };
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .split('.')
                .all(|atom| !atom.is_empty() && atom.chars().all(atext));
        let label_ok = |label: &str| {
            (1..=63).contains(&label.len())
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        };
        let domain_ok = domain.contains('.') && domain.split('.').all(label_ok);
        if !local_ok || !domain_ok {
            return Err("must be an e-mail address (name@domain)".into());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An address as stored: what an earlier, looser rule accepted (any non-blank address with
    /// one `@`, no spaces or control characters) still reads, so a stricter rule for new
    /// addresses never makes an existing account unreadable.
    pub fn from_stored(text: &str) -> Result<Self, String> {
        Self::parse(text).or_else(|error| {
            let loose = !text.is_empty()
                && text.len() <= Self::MAX_LEN
                && text.split('@').count() == 2
                && !text.chars().any(|c| c.is_whitespace() || c.is_control());
            if loose {
                Ok(Self(text.to_owned()))
            } else {
                Err(error)
            }
        })
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 3–32 characters of letters, digits, `_`, `-` or `.` (any script), that the
/// PRECIS `UsernameCaseMapped` profile (RFC 8265) accepts, stored in Unicode NFC. Unique by
/// [`Username::key`]: without regard to case, width (full-width `ａｄｍｉｎ`) or look-alike
/// letters (Cyrillic `аdmin`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Username(String);

impl Username {
    pub const MIN_CHARS: usize = 3;
    pub const MAX_CHARS: usize = 32;

    pub fn parse(text: &str) -> Result<Self, String> {
        use precis_core::profile::PrecisFastInvocation;
        use unicode_normalization::UnicodeNormalization;
        let name: String = text.trim().nfc().collect();
        let name = name.as_str();
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
        if precis_profiles::UsernameCaseMapped::enforce(name).is_err() {
            return Err(
                "is not a valid username (RFC 8265: letters of one direction, no symbols)".into(),
            );
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name as stored: one an earlier rule accepted (3–32 letters, digits, `_`, `-`, `.`)
    /// still reads, though PRECIS would refuse it now.
    pub fn from_stored(text: &str) -> Result<Self, String> {
        Self::parse(text).or_else(|error| {
            let chars = text.chars().count();
            let loose = (Self::MIN_CHARS..=Self::MAX_CHARS).contains(&chars)
                && text
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if loose {
                Ok(Self(text.to_owned()))
            } else {
                Err(error)
            }
        })
    }

    /// What uniqueness is enforced on, the same on every backend (computed here, stored as is):
    /// the PRECIS `UsernameCaseMapped` form (width-mapped, lower-cased, NFC), then its UTS #39
    /// confusable skeleton, lower-cased (the skeleton maps some letters to capitals: `0` → `O`),
    /// until it no longer changes. `admin`, `Admin`, `ａｄｍｉｎ` and `аdmin` share one key.
    pub fn key(&self) -> String {
        use precis_core::profile::PrecisFastInvocation;
        let mut key = precis_profiles::UsernameCaseMapped::enforce(self.0.as_str())
            .map(|k| k.into_owned())
            .unwrap_or_else(|_| self.0.to_lowercase());
        for _ in 0..4 {
            let next: String = unicode_security::confusable_detection::skeleton(&key)
                .flat_map(char::to_lowercase)
                .collect();
            if next == key {
                break;
            }
            key = next;
        }
        key
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
        let key = |name: &str| Username::parse(name).unwrap().key();
        assert_eq!(key("WeiLi"), key("weili"));
    }

    /// Finding 10: look-alikes share one key: case, width, Cyrillic for Latin, digits for
    /// letters; different names do not.
    #[test]
    fn look_alike_usernames_share_a_key() {
        let key = |name: &str| Username::parse(name).unwrap().key();
        let admin = key("admin");
        for alike in [
            "Admin",
            "ADMIN",
            "\u{430}dmin",
            "\u{ff41}\u{ff44}\u{ff4d}\u{ff49}\u{ff4e}",
        ] {
            assert_eq!(key(alike), admin, "{alike:?}");
        }
        assert_eq!(key("paypal"), key("p\u{430}yp\u{430}l"));
        // PRECIS refuses compatibility letters outright (a mathematical sans-serif i).
        assert!(Username::parse("adm\u{1d5c2}n").is_err());
        assert_ne!(key("admin"), key("admins"));
        assert_ne!(key("li_wei"), key("li_wen"));
        assert_eq!(
            key("\u{674e}\u{5c0f}\u{9f99}"),
            key("\u{674e}\u{5c0f}\u{9f99}")
        );
        // Stored in NFC: a decomposed é is the composed one.
        assert_eq!(
            Username::parse("caf\u{65}\u{301}s").unwrap().as_str(),
            "caf\u{e9}s"
        );
    }

    #[test]
    fn stored_identities_an_earlier_rule_accepted_still_read() {
        assert!(Email::parse("\u{674e}@example.com").is_err());
        assert!(Email::from_stored("\u{674e}@example.com").is_ok());
        assert!(Email::from_stored("no at sign").is_err());
        assert!(Username::parse("adm\u{1d5c2}n").is_err());
        assert!(Username::from_stored("adm\u{1d5c2}n").is_ok());
        assert!(Username::from_stored("a b").is_err());
    }

    #[test]
    fn email_refuses_invisible_markup_and_non_ascii() {
        for bad in [
            "li\u{200b}wei@example.com",
            "li.wei@exa\u{200b}mple.com",
            "<script>@example.com",
            "\"quoted\"@example.com",
            "li..wei@example.com",
            ".liwei@example.com",
            "li\u{2060}@example.com",
            "\u{430}dmin@example.com",
            "a@-example.com",
            "a@ex_ample.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        for good in [
            "o'brien+tag@example.com",
            "a.b-c_d@xn--fiqs8s.cn",
            "x@sub.example.co",
        ] {
            assert!(Email::parse(good).is_ok(), "{good:?} should be accepted");
        }
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
