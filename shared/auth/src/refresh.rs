//! Refresh tokens: opaque, `<session id>.<256 random bits, base64url>`. Only their SHA-256 is
//! stored; the session id in front lets the store find the session without an index, and lets
//! a token that is no longer its session's current one be recognised as a replay.

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zx_domain::{SessionId, TokenHash};

/// Random bytes in a token.
const SECRET_BYTES: usize = 32;
/// base64url (no padding) of [`SECRET_BYTES`].
const SECRET_CHARS: usize = 43;
/// A canonical UUID.
const ID_CHARS: usize = 36;
/// The length of every token we issue.
pub const REFRESH_TOKEN_CHARS: usize = ID_CHARS + 1 + SECRET_CHARS;

/// A new refresh token and the hash to store.
pub struct NewRefreshToken {
    pub token: String,
    pub hash: TokenHash,
}

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// A fresh token for `session`.
pub fn new_refresh_token(session: &SessionId) -> Result<NewRefreshToken, RandomError> {
    let mut secret = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| RandomError)?;
    let token = format!("{session}.{}", URL_SAFE_NO_PAD.encode(secret));
    let hash = hash_refresh_token(&token);
    Ok(NewRefreshToken { token, hash })
}

/// The session a presented token names and the token's hash, if it has the form of ours.
/// Nothing about its validity: that is the stored session's hash.
pub fn parse_refresh_token(presented: &str) -> Option<(SessionId, TokenHash)> {
    if presented.len() != REFRESH_TOKEN_CHARS {
        return None;
    }
    let (id, secret) = presented.split_once('.')?;
    let session = SessionId::parse(id).ok()?;
    // Only the canonical form: another spelling of the same id would hash differently.
    let canonical = session.as_str() == id
        && secret.len() == SECRET_CHARS
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    canonical.then(|| (session, hash_refresh_token(presented)))
}

/// SHA-256 of the token, lower-case hex.
pub fn hash_refresh_token(token: &str) -> TokenHash {
    TokenHash::from_sha256(digest::digest(&digest::SHA256, token.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_token_parses_back_to_its_session_and_hash() {
        let session = SessionId::generate();
        let new = new_refresh_token(&session).unwrap();
        assert_eq!(new.token.len(), REFRESH_TOKEN_CHARS);
        let (parsed, hash) = parse_refresh_token(&new.token).unwrap();
        assert_eq!(parsed, session);
        assert!(hash == new.hash);
        assert!(new_refresh_token(&session).unwrap().hash != new.hash);
    }

    #[test]
    fn other_spellings_and_shapes_are_not_tokens() {
        let session = SessionId::generate();
        let new = new_refresh_token(&session).unwrap();
        let upper = new
            .token
            .replacen(session.as_str(), &session.as_str().to_uppercase(), 1);
        assert!(parse_refresh_token(&upper).is_none());
        assert!(parse_refresh_token("").is_none());
        assert!(parse_refresh_token(&format!("{}x", new.token)).is_none());
        let bad_secret = format!("{session}.{}", "!".repeat(SECRET_CHARS));
        assert!(parse_refresh_token(&bad_secret).is_none());
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        assert_eq!(
            hash_refresh_token("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
