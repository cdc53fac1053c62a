//! One-time codes (an e-mail change's confirmation): 128 random bits, base64url. Only their
//! SHA-256 is kept.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zx_domain::{OneTimeCode, TokenHash};

use crate::refresh::RandomError;

/// Random bytes in a code: guessing one is hopeless within its hour.
const CODE_BYTES: usize = 16;
/// base64url (no padding) of [`CODE_BYTES`].
pub const CODE_CHARS: usize = 22;

/// A fresh code and the hash to keep.
pub fn new_one_time_code() -> Result<(OneTimeCode, TokenHash), RandomError> {
    let mut secret = [0u8; CODE_BYTES];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| RandomError)?;
    let code = URL_SAFE_NO_PAD.encode(secret);
    let hash = hash_one_time_code(&code);
    Ok((OneTimeCode::new(code), hash))
}

/// SHA-256 of a presented code, lower-case hex.
pub fn hash_one_time_code(code: &str) -> TokenHash {
    TokenHash::from_sha256(digest::digest(&digest::SHA256, code.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_fresh_and_hash_to_what_is_kept() {
        let (code, hash) = new_one_time_code().unwrap();
        assert_eq!(code.expose().len(), CODE_CHARS);
        assert!(hash_one_time_code(code.expose()) == hash);
        let (other, _) = new_one_time_code().unwrap();
        assert_ne!(code, other);
        assert!(hash_one_time_code("nope") != hash);
    }
}
