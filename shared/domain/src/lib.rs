//! Zhixuan's domain: value types that cannot hold invalid values, entities, and the repository
//! traits the adapters implement. No AWS, database or HTTP types live here.

pub mod error;
pub mod repository;
pub mod timestamp;
pub mod user;

pub use error::{FieldError, RepositoryError, UniqueField, ValidationErrors};
pub use repository::{UserReader, UserRepository, UserWriter};
pub use timestamp::Timestamp;
pub use user::{Email, Password, PasswordHash, Role, User, UserId, Username};
