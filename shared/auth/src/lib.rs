//! Credentials: bcrypt password hashing with timing-equalised verification, and Ed25519 JWTs
//! with every claim validated (issued with a private key, verified with public keys only).

pub mod password;
pub mod token;

pub use password::{BcryptCost, PasswordHasher};
pub use token::{
    AuthClaims, IssuedToken, PublicKey, SigningKey, TokenError, TokenIssuer, TokenSettings,
    TokenVerifier,
};
