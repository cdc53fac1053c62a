//! The users service: registration, login, token validation and profiles. Handlers are plain
//! async functions over the repository traits; the edge (`zx_http::Edge`) authenticates.

pub mod email_change;
pub mod guard;
pub mod handlers;
pub mod sessions;
pub mod standing;
pub mod views;

pub use guard::{PasswordGuard, Presenter};
pub use handlers::{get_user, login, me, register, update_user, validate};
pub use sessions::{logout, refresh};
pub use standing::SessionStanding;
