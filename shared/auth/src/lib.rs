//! Credentials: bcrypt password hashing with timing-equalised verification, and Ed25519 JWTs
//! with every claim validated (issued with a private key, verified with public keys only).

pub mod code;
pub mod password;
pub mod refresh;
pub mod token;

pub use code::{hash_one_time_code, new_one_time_code};
pub use jsonwebtoken::Algorithm;
pub use password::{BcryptCost, PasswordHasher};
pub use refresh::{NewRefreshToken, hash_refresh_token, new_refresh_token, parse_refresh_token};
pub use token::{
    AuthClaims, IssuedToken, PublicKey, RemoteError, RemoteSigner, SigningKey, TokenError,
    TokenIssuer, TokenSettings, TokenVerifier, ecdsa_der_to_jose,
};
