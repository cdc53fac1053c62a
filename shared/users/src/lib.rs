//! The users service: registration, login, token validation, profiles, and the Lambda
//! authorizer. Handlers are plain async functions over the repository traits.

pub mod authorizer;
pub mod handlers;
pub mod views;

pub use authorizer::authorize;
pub use handlers::{get_user, login, me, register, update_user, validate};
