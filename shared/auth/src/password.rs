//! bcrypt hashing on the blocking pool, rejecting (never truncating) passwords over 72 bytes.
//!
//! bcrypt uses at most 72 bytes of input. The crate's `non_truncating_*` functions also refuse
//! exactly 72 bytes (they count a terminating NUL that bcrypt drops at that length), so the
//! limit is enforced here instead: [`Password`] holds at most 72 bytes, and verification treats
//! anything longer as a mismatch before bcrypt could truncate it.

use zx_domain::{Password, PasswordHash};

/// A bcrypt work factor, 4 to 31 (bcrypt's own range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BcryptCost(u32);

impl BcryptCost {
    /// The seed's cost.
    pub const DEFAULT: Self = Self(10);

    pub fn parse(text: &str) -> Result<Self, String> {
        let cost: u32 = text
            .trim()
            .parse()
            .map_err(|_| format!("BCRYPT_COST must be a whole number, got {text:?}"))?;
        if (4..=31).contains(&cost) {
            Ok(Self(cost))
        } else {
            Err(format!("BCRYPT_COST must be between 4 and 31, got {cost}"))
        }
    }

    pub fn value(self) -> u32 {
        self.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed")]
    Bcrypt(#[from] bcrypt::BcryptError),
    #[error("the hashing task did not complete")]
    Join(#[from] tokio::task::JoinError),
    #[error("bcrypt produced a malformed hash")]
    Malformed,
}

/// Hashes and verifies passwords. Verification of an unknown user costs the same as a real one.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    cost: BcryptCost,
    /// A well-formed bcrypt hash at `cost` that no password matches: verifying against it does
    /// the same work as verifying against a real hash, without any work at start-up.
    dummy_hash: String,
}

impl PasswordHasher {
    pub fn new(cost: BcryptCost) -> Self {
        // Salt and digest from the OpenBSD bcrypt test vectors; only the cost is ours.
        let dummy_hash = format!(
            "$2b${:02}$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy",
            cost.value()
        );
        Self { cost, dummy_hash }
    }

    pub fn cost(&self) -> BcryptCost {
        self.cost
    }

    /// Whether `hash` was made with a lower cost than the configured one (a cost raised since,
    /// or an account made elsewhere): a login then stores a new hash, so every account ends up
    /// costing the same to verify and login timing cannot tell the old ones apart. A hash
    /// whose cost cannot be read is rehashed too.
    pub fn needs_rehash(&self, hash: &PasswordHash) -> bool {
        hash_cost(hash.expose()).is_none_or(|cost| cost < self.cost.value())
    }

    /// Hashes a password with a fresh salt.
    pub async fn hash(&self, password: &Password) -> Result<PasswordHash, HashError> {
        let password = password.clone();
        let cost = self.cost.value();
        let hash = tokio::task::spawn_blocking(move || {
            // `Password` guarantees at most 72 bytes: nothing is truncated.
            bcrypt::hash(password.expose(), cost)
        })
        .await??;
        PasswordHash::from_stored(hash).map_err(|_| HashError::Malformed)
    }

    /// Whether `password` matches `hash`. With `hash: None` (no such user) it verifies against a
    /// dummy hash of the same cost and returns `false`, so both cases take the same time.
    /// A password over 72 bytes never matches (bcrypt would truncate it); it is checked against
    /// the dummy hash too, so it takes the same time. A malformed stored hash counts as no match.
    pub async fn verify(&self, password: &str, hash: Option<&PasswordHash>) -> bool {
        let (known, hash) = match hash {
            Some(hash) if password.len() <= Password::MAX_BYTES => (true, hash.expose().to_owned()),
            _ => (false, self.dummy_hash.clone()),
        };
        let password = password.to_owned();
        let outcome =
            tokio::task::spawn_blocking(move || bcrypt::verify(password.as_bytes(), &hash)).await;
        match outcome {
            Ok(Ok(matches)) => known && matches,
            Ok(Err(error)) => {
                tracing::debug!(%error, "password verification rejected the input");
                false
            }
            Err(error) => {
                tracing::error!(%error, "password verification task failed");
                false
            }
        }
    }
}

/// The cost of a bcrypt hash (`$2b$10$...`).
fn hash_cost(hash: &str) -> Option<u32> {
    let mut parts = hash.split('$');
    let (_, _, cost) = (parts.next()?, parts.next()?, parts.next()?);
    cost.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[tokio::test]
    async fn hashes_below_the_configured_cost_need_a_rehash() {
        let low = PasswordHasher::new(BcryptCost::parse("4").unwrap());
        let high = PasswordHasher::new(BcryptCost::parse("5").unwrap());
        let hash = low
            .hash(&Password::parse("correct horse 1").unwrap())
            .await
            .unwrap();
        assert!(!low.needs_rehash(&hash));
        assert!(high.needs_rehash(&hash));
        assert_eq!(hash_cost("$2b$12$abc"), Some(12));
        assert_eq!(hash_cost("garbage"), None);
    }

    fn hasher() -> PasswordHasher {
        PasswordHasher::new(BcryptCost::parse("4").unwrap())
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let password = Password::parse("correct horse").unwrap();
        let hash = hasher().hash(&password).await.unwrap();
        assert!(hash.expose().starts_with("$2b$04$"));
        assert!(hasher().verify("correct horse", Some(&hash)).await);
        assert!(!hasher().verify("wrong horse!", Some(&hash)).await);
    }

    #[tokio::test]
    async fn unknown_user_never_matches_even_the_dummy_password() {
        // The dummy hash is a valid bcrypt hash, so verify really runs (same cost as a real one).
        let dummy = hasher().dummy_hash.clone();
        assert!(!bcrypt::verify("anything", &dummy).unwrap());
        assert!(!hasher().verify("anything", None).await);
        // At the configured cost, whatever it is: an unknown e-mail costs what a known one does.
        for cost in ["4", "10", "12"] {
            let hasher = PasswordHasher::new(BcryptCost::parse(cost).unwrap());
            let parts = bcrypt::HashParts::from_str(&hasher.dummy_hash).unwrap();
            assert_eq!(parts.get_cost().to_string(), cost);
        }
    }

    #[tokio::test]
    async fn over_long_passwords_never_match() {
        let password = Password::parse(&"p".repeat(72)).unwrap();
        let hash = hasher().hash(&password).await.unwrap();
        // bcrypt::verify would truncate the 73-byte input to 72 and accept it.
        assert!(!hasher().verify(&"p".repeat(73), Some(&hash)).await);
        assert!(hasher().verify(&"p".repeat(72), Some(&hash)).await);
    }

    #[test]
    fn cost_bounds() {
        assert!(BcryptCost::parse("3").is_err());
        assert!(BcryptCost::parse("32").is_err());
        assert!(BcryptCost::parse("ten").is_err());
        assert_eq!(BcryptCost::parse(" 12 ").unwrap().value(), 12);
    }
}
