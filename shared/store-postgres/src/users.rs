//! Users on Postgres: the `users` table of the service's schema. Uniqueness is the database's
//! (named constraints, mapped to a domain conflict); updates are conditional on `version`.

use crate::PgSchema;
use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use zx_domain::{
    Email, PasswordHash, PasswordRehasher, RepositoryError, Role, Timestamp, UniqueField, User,
    UserId, UserReader, UserWriter, Username,
};

const COLUMNS: &str = "user_id, username, email, password_hash, role, created_at, updated_at, \
     version, session_epoch";

/// The users table of one schema.
#[derive(Debug, Clone)]
pub struct PgUserRepository {
    pool: PgPool,
    /// `"<schema>".users`
    table: String,
}

impl PgUserRepository {
    pub fn new(pool: PgPool, schema: &PgSchema) -> Self {
        Self {
            pool,
            table: crate::qualified(schema, "users"),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sets every row's `username_key` to [`Username::key`] (what migration 4 could only
    /// approximate in SQL with `lower()`): the number of rows re-keyed, and the names that
    /// could not be because a look-alike already holds their key (an operator renames one).
    pub async fn rekey_usernames(&self) -> Result<(usize, Vec<String>), RepositoryError> {
        let rows = sqlx::query(&format!(
            "select user_id, username, username_key from {}",
            self.table
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres select usernames", e))?;
        let (mut rekeyed, mut clashes) = (0, Vec::new());
        for row in &rows {
            let get = |name: &str| {
                row.try_get::<String, _>(name)
                    .map_err(|e| RepositoryError::Corrupt(format!("user {name}: {e}")))
            };
            let (id, name, stored) = (get("user_id")?, get("username")?, get("username_key")?);
            let key = Username::from_stored(&name)
                .map_err(RepositoryError::Corrupt)?
                .key();
            if key == stored {
                continue;
            }
            let result = sqlx::query(&format!(
                "update {} set username_key = $2 where user_id = $1",
                self.table
            ))
            .bind(&id)
            .bind(&key)
            .execute(&self.pool)
            .await;
            match result.map_err(|e| map_write_error("Postgres rekey username", e)) {
                Ok(_) => rekeyed += 1,
                Err(RepositoryError::Conflict(_)) => clashes.push(name),
                Err(e) => return Err(e),
            }
        }
        Ok((rekeyed, clashes))
    }
}

fn map_write_error(operation: &'static str, error: sqlx::Error) -> RepositoryError {
    if let sqlx::Error::Database(db) = &error
        && db.is_unique_violation()
    {
        match db.constraint() {
            Some("users_email_key") => return RepositoryError::Conflict(UniqueField::Email),
            Some("users_username_key") => return RepositoryError::Conflict(UniqueField::Username),
            _ => {}
        }
    }
    crate::db_error(operation, error)
}

fn user_from_row(row: &PgRow) -> Result<User, RepositoryError> {
    let corrupt = |e: String| RepositoryError::Corrupt(e);
    let get = |name: &str| -> Result<String, RepositoryError> {
        row.try_get::<String, _>(name)
            .map_err(|e| corrupt(format!("{name}: {e}")))
    };
    let at = |name: &str| -> Result<Timestamp, RepositoryError> {
        row.try_get::<time::OffsetDateTime, _>(name)
            .map(Timestamp::from_datetime)
            .map_err(|e| corrupt(format!("{name}: {e}")))
    };
    let number = |name: &str| -> Result<u64, RepositoryError> {
        row.try_get::<i64, _>(name)
            .map_err(|e| corrupt(format!("{name}: {e}")))
            .and_then(|n| u64::try_from(n).map_err(|e| corrupt(format!("{name}: {e}"))))
    };
    Ok(User {
        id: UserId::parse(&get("user_id")?).map_err(corrupt)?,
        username: Username::from_stored(&get("username")?).map_err(corrupt)?,
        email: Email::from_stored(&get("email")?).map_err(corrupt)?,
        password_hash: PasswordHash::from_stored(get("password_hash")?).map_err(corrupt)?,
        role: Role::parse(&get("role")?).map_err(corrupt)?,
        created_at: at("created_at")?,
        updated_at: at("updated_at")?,
        version: number("version")?,
        session_epoch: number("session_epoch")?,
    })
}

pub(crate) fn version_param(version: u64) -> Result<i64, RepositoryError> {
    i64::try_from(version)
        .map_err(|_| RepositoryError::Corrupt(format!("version {version} out of range")))
}

#[async_trait]
impl UserReader for PgUserRepository {
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, RepositoryError> {
        sqlx::query(&format!(
            "select {COLUMNS} from {} where user_id = $1",
            self.table
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres select user", e))?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepositoryError> {
        sqlx::query(&format!(
            "select {COLUMNS} from {} where email = $1",
            self.table
        ))
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres select user by email", e))?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }
}

#[async_trait]
impl UserWriter for PgUserRepository {
    async fn create(&self, user: &User) -> Result<(), RepositoryError> {
        sqlx::query(&format!(
            "insert into {} ({COLUMNS}, username_key)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            self.table
        ))
        .bind(user.id.as_str())
        .bind(user.username.as_str())
        .bind(user.email.as_str())
        .bind(user.password_hash.expose())
        .bind(user.role.as_str())
        .bind(user.created_at.as_datetime())
        .bind(user.updated_at.as_datetime())
        .bind(version_param(user.version)?)
        .bind(version_param(user.session_epoch)?)
        .bind(user.username.key())
        .execute(&self.pool)
        .await
        .map_err(|e| map_write_error("Postgres insert user", e))?;
        Ok(())
    }

    async fn update(&self, current: &User, next: &User) -> Result<(), RepositoryError> {
        let result = sqlx::query(&format!(
            "update {} set username = $3, email = $4, password_hash = $5, role = $6,
                 updated_at = $7, version = $8, session_epoch = $9, username_key = $10
             where user_id = $1 and version = $2",
            self.table
        ))
        .bind(next.id.as_str())
        .bind(version_param(current.version)?)
        .bind(next.username.as_str())
        .bind(next.email.as_str())
        .bind(next.password_hash.expose())
        .bind(next.role.as_str())
        .bind(next.updated_at.as_datetime())
        .bind(version_param(next.version)?)
        .bind(version_param(next.session_epoch)?)
        .bind(next.username.key())
        .execute(&self.pool)
        .await
        .map_err(|e| map_write_error("Postgres update user", e))?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(RepositoryError::ConcurrentUpdate)
        }
    }
}

#[async_trait]
impl PasswordRehasher for PgUserRepository {
    async fn replace_password_hash(
        &self,
        current: &User,
        next: &User,
    ) -> Result<(), RepositoryError> {
        let result = sqlx::query(&format!(
            "update {} set password_hash = $3, version = $4, updated_at = $5
             where user_id = $1 and version = $2",
            self.table
        ))
        .bind(current.id.as_str())
        .bind(version_param(current.version)?)
        .bind(next.password_hash.expose())
        .bind(version_param(next.version)?)
        .bind(next.updated_at.as_datetime())
        .execute(&self.pool)
        .await
        .map_err(|e| map_write_error("Postgres rehash user", e))?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(RepositoryError::ConcurrentUpdate)
        }
    }
}
