//! Repository traits: the storage contract every backend (DynamoDB, Postgres) implements and the
//! contract test suite in `tests/` checks. Split by capability so handlers ask for the least.

use async_trait::async_trait;

use crate::{Email, Page, Product, ProductId, ProductQuery, RepositoryError, Stock, User, UserId};

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

/// Reads the catalogue. Reads are strongly consistent.
#[async_trait]
pub trait ProductReader: Send + Sync {
    /// The product with this id, soft-deleted or not (the caller decides what to show).
    async fn find_product(&self, id: &ProductId) -> Result<Option<Product>, RepositoryError>;

    /// Products passing `query`'s filters (soft-deleted ones never), newest first
    /// (`created_at`, then id, descending), at most `query.limit` of them, starting after
    /// `query.after`. `next` is set when more may follow. A walk from the first page to the
    /// last returns every product that existed when it began exactly once, whatever is
    /// inserted meanwhile.
    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, RepositoryError>;
}

/// Writes the catalogue (not the stock counters: see [`StockWriter`]).
#[async_trait]
pub trait ProductWriter: Send + Sync {
    /// Stores a new product.
    async fn create_product(&self, product: &Product) -> Result<(), RepositoryError>;

    /// Replaces the catalogue fields (name, description, price, category, images, deleted_at,
    /// updated_at, version) of `current` with those of `next`, only if the stored version is
    /// still `current.version`; otherwise [`RepositoryError::ConcurrentUpdate`]. Stock counters
    /// are left as they are.
    async fn update_product(
        &self,
        current: &Product,
        next: &Product,
    ) -> Result<(), RepositoryError>;
}

/// A change of available stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StockChange {
    /// Set available stock to this value (≥ 0).
    Set(i64),
    /// Add this (possibly negative) amount to available stock.
    Adjust(i64),
}

/// Changes stock counters atomically.
#[async_trait]
pub trait StockWriter: Send + Sync {
    /// Applies `change` to the available stock of a product that exists and is not deleted,
    /// atomically, and returns the new counters. Available stock never goes below zero
    /// ([`RepositoryError::InsufficientStock`]); reserved stock is not touched.
    async fn change_stock(
        &self,
        id: &ProductId,
        change: StockChange,
    ) -> Result<Stock, RepositoryError>;
}

/// Every catalogue capability, for adapters and wiring.
pub trait ProductRepository: ProductReader + ProductWriter + StockWriter {}

impl<T: ProductReader + ProductWriter + StockWriter> ProductRepository for T {}
