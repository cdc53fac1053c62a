//! Schema migrations: SQL files embedded at build time, applied in order, each once, under an
//! advisory lock so concurrent runs are safe. Run by `zx-admin migrate`, never at cold start.

use sqlx::PgPool;

use crate::PgSchema;

/// One service's migrations, applied to that service's own schema: (version, name, SQL), in order.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSet {
    pub service: &'static str,
    migrations: &'static [(i64, &'static str, &'static str)],
}

/// The users service (`USERS_SCHEMA`).
pub const USERS: MigrationSet = MigrationSet {
    service: "users",
    migrations: &[
        (
            1,
            "users",
            include_str!("../migrations/users/0001_users.sql"),
        ),
        (
            2,
            "sessions",
            include_str!("../migrations/users/0002_sessions.sql"),
        ),
        (
            3,
            "session tokens",
            include_str!("../migrations/users/0003_session_tokens.sql"),
        ),
        (
            4,
            "username key",
            include_str!("../migrations/users/0004_username_key.sql"),
        ),
    ],
};

/// The products service: catalogue and stock (`PRODUCTS_SCHEMA`).
pub const PRODUCTS: MigrationSet = MigrationSet {
    service: "products",
    migrations: &[
        (
            1,
            "products",
            include_str!("../migrations/products/0001_products.sql"),
        ),
        (
            2,
            "stock changes",
            include_str!("../migrations/products/0002_stock_changes.sql"),
        ),
        (
            3,
            "stock change body",
            include_str!("../migrations/products/0003_stock_change_body.sql"),
        ),
        (
            4,
            "reservations",
            include_str!("../migrations/products/0004_reservations.sql"),
        ),
        (
            5,
            "reservation commit",
            include_str!("../migrations/products/0005_reservation_commit.sql"),
        ),
        (
            6,
            "stock shards",
            include_str!("../migrations/products/0006_stock_shards.sql"),
        ),
        (
            7,
            "purge indexes",
            include_str!("../migrations/products/0007_purge_indexes.sql"),
        ),
    ],
};

/// The orders service: orders, idempotency keys and the outbox (`ORDERS_SCHEMA`).
pub const ORDERS: MigrationSet = MigrationSet {
    service: "orders",
    migrations: &[
        (
            1,
            "orders",
            include_str!("../migrations/orders/0001_orders.sql"),
        ),
        (
            2,
            "clocks, open orders, parked rows",
            include_str!("../migrations/orders/0002_clocks_open_parked.sql"),
        ),
        (
            3,
            "idempotency key expiry index",
            include_str!("../migrations/orders/0003_key_expiry.sql"),
        ),
        (
            4,
            "outbox trace header",
            include_str!("../migrations/orders/0004_outbox_trace.sql"),
        ),
    ],
};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("migration {version} ({name}) failed")]
    Apply {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("preparing schema {schema} failed")]
    Prepare {
        schema: String,
        #[source]
        source: sqlx::Error,
    },
}

/// Applies every pending migration of `set` to `schema` (created if missing); each runs with
/// `search_path` set to `schema`. Returns the versions applied now.
pub async fn migrate(
    pool: &PgPool,
    schema: &PgSchema,
    set: &MigrationSet,
) -> Result<Vec<i64>, MigrateError> {
    let prepare = |source| MigrateError::Prepare {
        schema: schema.to_string(),
        source,
    };
    let mut tx = pool.begin().await.map_err(prepare)?;
    sqlx::query("select pg_advisory_xact_lock(hashtext('zhixuan-migrate:' || $1))")
        .bind(schema.as_str())
        .execute(&mut *tx)
        .await
        .map_err(prepare)?;
    // The name is validated by PgSchema: safe to interpolate.
    sqlx::raw_sql(&format!(
        "create schema if not exists \"{schema}\";
         create table if not exists \"{schema}\".schema_migrations (
             version bigint primary key, name text not null, applied_at timestamptz not null default now());"
    ))
    .execute(&mut *tx)
    .await
    .map_err(prepare)?;
    let applied: Vec<i64> = sqlx::query_scalar(&format!(
        "select version from \"{schema}\".schema_migrations"
    ))
    .fetch_all(&mut *tx)
    .await
    .map_err(prepare)?;
    let mut now_applied = Vec::new();
    for &(version, name, sql) in set.migrations {
        if applied.contains(&version) {
            continue;
        }
        let apply = |source| MigrateError::Apply {
            version,
            name,
            source,
        };
        sqlx::raw_sql(&format!("set local search_path to \"{schema}\";\n{sql}"))
            .execute(&mut *tx)
            .await
            .map_err(apply)?;
        sqlx::query(&format!(
            "insert into \"{schema}\".schema_migrations (version, name) values ($1, $2)"
        ))
        .bind(version)
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(apply)?;
        now_applied.push(version);
    }
    tx.commit().await.map_err(prepare)?;
    Ok(now_applied)
}
