//! Postgres (RDS) adapters for the repository traits: one schema per service, a small pool per
//! Lambda instance, migrations embedded in the binary and applied by an explicit command.

pub mod migrate;
pub mod pool;
pub mod products;
pub mod users;

pub use migrate::{MigrateError, MigrationSet, migrate};
pub use pool::{PgSchema, PoolSettings, connect_lazy, ping};
pub use products::PgProductRepository;
pub use users::PgUserRepository;
