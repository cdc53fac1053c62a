//! Sessions on Postgres: the `sessions` table of the users schema. A rotation is one
//! conditional update that also share-locks the user row and checks its session epoch, so it
//! serialises with a password or role change (which moves the epoch on). Expired sessions are
//! deleted by later logins, a hundred at a time.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use zx_domain::{
    RepositoryError, Role, Session, SessionId, SessionReader, SessionRevoker, SessionRotator,
    SessionStarter, Standing, StandingReader, Timestamp, TokenHash, UserId,
};

use crate::PgSchema;
use crate::users::version_param;

const COLUMNS: &str =
    "session_id, user_id, token_hash, user_epoch, created_at, expires_at, revoked, used_hashes";

/// The sessions table of one schema (the users service's).
#[derive(Debug, Clone)]
pub struct PgSessionRepository {
    pool: PgPool,
    /// `"<schema>".sessions`
    sessions: String,
    /// `"<schema>".users`
    users: String,
}

impl PgSessionRepository {
    pub fn new(pool: PgPool, schema: &PgSchema) -> Self {
        Self {
            pool,
            sessions: crate::qualified(schema, "sessions"),
            users: crate::qualified(schema, "users"),
        }
    }
}

fn session_from_row(row: &PgRow) -> Result<Session, RepositoryError> {
    let corrupt = |name: &str, e: String| RepositoryError::Corrupt(format!("session {name}: {e}"));
    let text = |name: &str| -> Result<String, RepositoryError> {
        row.try_get::<String, _>(name)
            .map_err(|e| corrupt(name, e.to_string()))
    };
    let at = |name: &str| -> Result<Timestamp, RepositoryError> {
        row.try_get::<time::OffsetDateTime, _>(name)
            .map(Timestamp::from_datetime)
            .map_err(|e| corrupt(name, e.to_string()))
    };
    let epoch: i64 = row
        .try_get("user_epoch")
        .map_err(|e| corrupt("user_epoch", e.to_string()))?;
    Ok(Session {
        id: SessionId::parse(&text("session_id")?).map_err(|e| corrupt("session_id", e))?,
        user_id: UserId::parse(&text("user_id")?).map_err(|e| corrupt("user_id", e))?,
        token_hash: TokenHash::from_hex(&text("token_hash")?)
            .map_err(|e| corrupt("token_hash", e))?,
        user_epoch: u64::try_from(epoch).map_err(|e| corrupt("user_epoch", e.to_string()))?,
        created_at: at("created_at")?,
        expires_at: at("expires_at")?,
        revoked: row
            .try_get("revoked")
            .map_err(|e| corrupt("revoked", e.to_string()))?,
        used_hashes: row
            .try_get::<Vec<String>, _>("used_hashes")
            .map_err(|e| corrupt("used_hashes", e.to_string()))?
            .iter()
            .map(|h| TokenHash::from_hex(h).map_err(|e| corrupt("used_hashes", e)))
            .collect::<Result<_, _>>()?,
    })
}

fn hashes(session: &Session) -> Vec<&str> {
    session.used_hashes.iter().map(TokenHash::as_str).collect()
}

#[async_trait]
impl SessionStarter for PgSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn create_session(&self, session: &Session) -> Result<(), RepositoryError> {
        // Each login also deletes up to 100 expired sessions (DynamoDB has a TTL for this), in
        // the same statement: no extra round trip, and rows another login is deleting are
        // skipped, not waited for.
        let result = sqlx::query(&format!(
            "with purged as (
                 delete from {sessions} where session_id in (
                     select session_id from {sessions} where expires_at < now()
                     limit 100 for update skip locked))
             insert into {sessions} ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8)
             on conflict (session_id) do nothing",
            sessions = self.sessions
        ))
        .bind(session.id.as_str())
        .bind(session.user_id.as_str())
        .bind(session.token_hash.as_str())
        .bind(version_param(session.user_epoch)?)
        .bind(session.created_at.as_datetime())
        .bind(session.expires_at.as_datetime())
        .bind(session.revoked)
        .bind(hashes(session))
        .execute(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres insert session", e))?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(RepositoryError::ConcurrentUpdate)
        }
    }
}

#[async_trait]
impl SessionReader for PgSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, RepositoryError> {
        sqlx::query(&format!(
            "select {COLUMNS} from {} where session_id = $1",
            self.sessions
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres select session", e))?
        .as_ref()
        .map(session_from_row)
        .transpose()
    }
}

#[async_trait]
impl SessionRotator for PgSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn rotate_session(
        &self,
        current: &Session,
        next: &Session,
    ) -> Result<(), RepositoryError> {
        let result = sqlx::query(&format!(
            "update {sessions} s set token_hash = $3, expires_at = $4, used_hashes = $6
             where s.session_id = $1 and s.token_hash = $2 and not s.revoked
               and exists (select 1 from {users} u
                           where u.user_id = s.user_id and u.session_epoch = $5
                           for share)",
            sessions = self.sessions,
            users = self.users,
        ))
        .bind(current.id.as_str())
        .bind(current.token_hash.as_str())
        .bind(next.token_hash.as_str())
        .bind(next.expires_at.as_datetime())
        .bind(version_param(current.user_epoch)?)
        .bind(hashes(next))
        .execute(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres rotate session", e))?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(RepositoryError::ConcurrentUpdate)
        }
    }
}

#[async_trait]
impl SessionRevoker for PgSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn revoke_session(&self, id: &SessionId) -> Result<(), RepositoryError> {
        sqlx::query(&format!(
            "update {} set revoked = true where session_id = $1",
            self.sessions
        ))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres revoke session", e))?;
        Ok(())
    }
}

#[async_trait]
impl StandingReader for PgSessionRepository {
    /// One query: the session joined with its user's epoch and role.
    #[tracing::instrument(skip_all)]
    async fn find_standing(
        &self,
        id: &SessionId,
        user: &UserId,
    ) -> Result<Option<Standing>, RepositoryError> {
        let row = sqlx::query(&format!(
            "select s.user_id, s.user_epoch, s.revoked, u.session_epoch, u.role
             from {sessions} s join {users} u on u.user_id = s.user_id
             where s.session_id = $1 and u.user_id = $2",
            sessions = self.sessions,
            users = self.users
        ))
        .bind(id.as_str())
        .bind(user.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| crate::db_error("Postgres select standing", e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let corrupt =
            |name: &str, e: String| RepositoryError::Corrupt(format!("standing {name}: {e}"));
        let epoch = |name: &str| -> Result<u64, RepositoryError> {
            let value: i64 = row
                .try_get(name)
                .map_err(|e| corrupt(name, e.to_string()))?;
            u64::try_from(value).map_err(|e| corrupt(name, e.to_string()))
        };
        let user_id: String = row
            .try_get("user_id")
            .map_err(|e| corrupt("user_id", e.to_string()))?;
        let role: String = row
            .try_get("role")
            .map_err(|e| corrupt("role", e.to_string()))?;
        Ok(Some(Standing {
            user_id: UserId::parse(&user_id).map_err(|e| corrupt("user_id", e))?,
            session_epoch: epoch("user_epoch")?,
            revoked: row
                .try_get("revoked")
                .map_err(|e| corrupt("revoked", e.to_string()))?,
            user_epoch: epoch("session_epoch")?,
            role: Role::parse(&role).map_err(|e| corrupt("role", e))?,
        }))
    }
}
