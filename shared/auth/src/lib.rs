//! Credentials: bcrypt password hashing with timing-equalised verification, and HS256 JWTs with
//! every claim validated.

pub mod password;
pub mod token;

pub use password::{BcryptCost, PasswordHasher};
pub use token::{AuthClaims, IssuedToken, JwtSecret, TokenError, TokenService, TokenSettings};
