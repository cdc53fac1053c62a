//! The connection pool: lazy (no I/O at cold start), small, with the seed's timeouts. One pool
//! per instance serves every schema: the repositories qualify their tables with the schema.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use zx_domain::RepositoryError;

/// A schema name: lower-case letters, digits and `_`, starting with a letter or `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSchema(String);

impl PgSchema {
    pub fn parse(name: &str) -> Result<Self, String> {
        let valid = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "schema name {name:?} must be 1-63 characters of a-z, 0-9 and _, not starting with a digit"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PgSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Pool sizing and timeouts. Defaults suit one Lambda instance (which serves one request at a
/// time): 2 connections, 2 s to connect, idle connections closed after 30 s (seed values).
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 2,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// A pool that connects on first use, at most `settings.max_connections` connections. Its
/// connections call themselves `zhixuan` in `pg_stat_activity`, unless the URL names them
/// (`?application_name=`).
pub fn connect_lazy(url: &str, settings: &PoolSettings) -> Result<PgPool, sqlx::Error> {
    Ok(connect_lazy_with(connect_options(url)?, settings))
}

/// The connection options of `url`, named `zhixuan` unless the URL names them.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(if options.get_application_name().is_none() {
        options.application_name("zhixuan")
    } else {
        options
    })
}

/// A lazy pool with these options (their password can be replaced later with
/// `PgPool::set_connect_options`: IAM authentication tokens expire).
pub fn connect_lazy_with(options: PgConnectOptions, settings: &PoolSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(0)
        .acquire_timeout(settings.connect_timeout)
        .idle_timeout(Some(settings.idle_timeout))
        .connect_lazy_with(options)
}

/// Checks the database answers (for health checks).
pub async fn ping(pool: &PgPool) -> Result<(), RepositoryError> {
    sqlx::query("select 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| crate::db_error("Postgres select 1", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names() {
        assert!(PgSchema::parse("users").is_ok());
        assert!(PgSchema::parse("t_0192_users").is_ok());
        for bad in ["", "Users", "1users", "users;drop", "a\"b", &"a".repeat(64)] {
            assert!(PgSchema::parse(bad).is_err(), "{bad:?}");
        }
    }
}
