//! Repository traits: the storage contract every backend (DynamoDB, Postgres) implements and the
//! contract test suite in `tests/` checks. Split by capability so handlers ask for the least.

use async_trait::async_trait;

use crate::{Email, RepositoryError, User, UserId};

/// Reads users. Reads are strongly consistent: a user stored a moment ago is found.
#[async_trait]
pub trait UserReader: Send + Sync {
    /// The user with this id, if any.
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, RepositoryError>;

    /// The user with this (normalised) e-mail address, if any.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepositoryError>;
}

/// Stores users, enforcing unique e-mail and (case-insensitive) username atomically.
#[async_trait]
pub trait UserWriter: Send + Sync {
    /// Stores a new user. Fails with [`RepositoryError::Conflict`] naming the field when the
    /// e-mail or the username is taken; of many concurrent creations with one e-mail exactly
    /// one succeeds.
    async fn create(&self, user: &User) -> Result<(), RepositoryError>;

    /// Replaces `current` with `next` (same id, `next.version == current.version + 1`), only if
    /// the stored version is still `current.version`; otherwise
    /// [`RepositoryError::ConcurrentUpdate`]. A changed e-mail or username that another user
    /// holds gives [`RepositoryError::Conflict`] and changes nothing.
    async fn update(&self, current: &User, next: &User) -> Result<(), RepositoryError>;
}

/// Both halves, for adapters and for wiring.
pub trait UserRepository: UserReader + UserWriter {}

impl<T: UserReader + UserWriter> UserRepository for T {}
