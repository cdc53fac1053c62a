//! Postgres (RDS) adapters for the repository traits: one schema per service, a small pool per
//! Lambda instance, migrations embedded in the binary and applied by an explicit command.

pub mod migrate;
pub mod orders;
pub mod pool;
pub mod products;
pub mod sessions;
pub mod stock;
pub mod users;

pub use migrate::{MigrateError, MigrationSet, migrate};
pub use orders::PgOrderRepository;
pub use pool::{PgSchema, PoolSettings, connect_lazy, connect_lazy_with, connect_options, ping};
pub use products::PgProductRepository;
pub use sessions::PgSessionRepository;
pub use users::PgUserRepository;

use zx_domain::RepositoryError;

/// Classifies a driver error: no connection in time, I/O, TLS and protocol failures (a
/// connection broken while it starts), a closed pool,
/// connection-class (`08`), resource (`53`) and shutdown (`57P`) errors, serialization
/// failures and deadlocks are transient ([`RepositoryError::Unavailable`], a 503 at the edge);
/// everything else (a missing table, a constraint we did not expect, a decoding error) is
/// permanent ([`RepositoryError::Failed`], a 500).
/// `map_err` of a query: [`db_error`] for `operation`.
pub(crate) fn db(operation: &'static str) -> impl Fn(sqlx::Error) -> RepositoryError {
    move |e| db_error(operation, e)
}

pub(crate) fn db_error(operation: &'static str, error: sqlx::Error) -> RepositoryError {
    let transient = match &error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // A connection that broke during its start-up (a proxy failing over, a reset while TLS
        // is negotiated: sqlx reads the closed socket as an invalid SSLRequest answer). Other
        // protocol errors stay permanent: a bug should not be retried.
        sqlx::Error::Protocol(message) => message.contains("SSLRequest"),
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "40001"
                || code == "40P01"
        }),
        _ => false,
    };
    if transient {
        RepositoryError::unavailable(operation, error)
    } else {
        RepositoryError::failed(operation, error)
    }
}

/// `"schema".table`: a table name qualified by a validated schema name, so one pool serves
/// every service's schema.
pub(crate) fn qualified(schema: &PgSchema, table: &str) -> String {
    format!("\"{}\".{table}", schema.as_str())
}

#[cfg(test)]
mod classification_tests {
    use super::db_error;

    #[test]
    fn broken_connections_are_transient_and_bugs_are_not() {
        // What sqlx reports when the connection is closed while it asks for TLS.
        let broken = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(db_error("select", broken).is_transient());
        assert!(db_error("select", sqlx::Error::PoolTimedOut).is_transient());
        assert!(!db_error("select", sqlx::Error::RowNotFound).is_transient());
        let bug = sqlx::Error::Protocol("unknown message type: 'x'".into());
        assert!(!db_error("select", bug).is_transient());
        assert!(!db_error("select", sqlx::Error::ColumnNotFound("x".into())).is_transient());
    }
}
