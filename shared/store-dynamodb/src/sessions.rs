//! Sessions on DynamoDB, in the users table: one item `SESSION#<id>` per session holding the
//! hash of its current refresh token. A rotation is one transaction: the session's update,
//! conditional on the presented hash and on not being revoked, and a condition check that the
//! user's session epoch is still the session's (a password or role change moves it on). Items
//! carry `expiresAt` (epoch seconds), the table's TTL attribute, so expired sessions go away.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem, Update};
use zx_domain::{
    RepositoryError, Role, Session, SessionId, SessionReader, SessionRevoker, SessionRotator,
    SessionStarter, Standing, StandingReader, Timestamp, TokenHash, UserId,
};

use crate::item::{Item, Strict, n, s};

/// Strict reads of session items (and of the user's standing).
const SESSION: Strict = Strict("session");
const USER: Strict = Strict("user");

mod attr {
    pub const PK: &str = "pk";
    pub const USER_ID: &str = "userId";
    pub const TOKEN_HASH: &str = "tokenHash";
    pub const USER_EPOCH: &str = "userEpoch";
    pub const CREATED_AT: &str = "createdAt";
    /// RFC 3339, the exact expiry.
    pub const EXPIRES: &str = "expires";
    /// Epoch seconds: the table's TTL attribute.
    pub const EXPIRES_AT: &str = "expiresAt";
    pub const REVOKED: &str = "revoked";
    /// The hashes of the last tokens used, oldest first (a list of strings).
    pub const USED_HASHES: &str = "usedHashes";
    /// On the user item (see `users.rs`).
    pub const SESSION_EPOCH: &str = "sessionEpoch";
    pub const ROLE: &str = "role";
    /// Which `create_session` call wrote the item: the SDK's retry of a put whose answer was
    /// lost (under load, past the attempt timeout) finds its own write and succeeds.
    pub const WRITE_ID: &str = "writeId";
}

pub(crate) fn session_key(id: &SessionId) -> String {
    format!("SESSION#{id}")
}

/// Sessions in the users table.
#[derive(Debug, Clone)]
pub struct DynamoSessionRepository {
    client: Client,
    table: String,
}

impl DynamoSessionRepository {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn session_item(session: &Session) -> Item {
    HashMap::from([
        (attr::PK.to_owned(), s(session_key(&session.id))),
        (attr::USER_ID.to_owned(), s(session.user_id.as_str())),
        (attr::TOKEN_HASH.to_owned(), s(session.token_hash.as_str())),
        (attr::USER_EPOCH.to_owned(), n(session.user_epoch)),
        (
            attr::CREATED_AT.to_owned(),
            s(session.created_at.to_rfc3339()),
        ),
        (attr::EXPIRES.to_owned(), s(session.expires_at.to_rfc3339())),
        (
            attr::EXPIRES_AT.to_owned(),
            n(session.expires_at.unix_seconds()),
        ),
        (
            attr::REVOKED.to_owned(),
            AttributeValue::Bool(session.revoked),
        ),
        (attr::USED_HASHES.to_owned(), used_hashes(session)),
    ])
}

fn used_hashes(session: &Session) -> AttributeValue {
    AttributeValue::L(session.used_hashes.iter().map(|h| s(h.as_str())).collect())
}

fn session_from_item(id: &SessionId, item: &Item) -> Result<Session, RepositoryError> {
    let corrupt = |field: &str, e: String| SESSION.corrupt(field, e);
    let at = |name: &str| SESSION.parsed(item, name, Timestamp::parse_rfc3339);
    Ok(Session {
        id: id.clone(),
        user_id: SESSION.parsed(item, attr::USER_ID, UserId::parse)?,
        token_hash: SESSION.parsed(item, attr::TOKEN_HASH, TokenHash::from_hex)?,
        user_epoch: SESSION.count(item, attr::USER_EPOCH)?,
        created_at: at(attr::CREATED_AT)?,
        expires_at: at(attr::EXPIRES)?,
        revoked: item
            .get(attr::REVOKED)
            .and_then(|v| v.as_bool().ok())
            .copied()
            .ok_or_else(|| corrupt(attr::REVOKED, "not a boolean".into()))?,
        used_hashes: match item.get(attr::USED_HASHES) {
            None => Vec::new(),
            Some(value) => value
                .as_l()
                .map_err(|_| corrupt(attr::USED_HASHES, "not a list".into()))?
                .iter()
                .map(|v| {
                    v.as_s()
                        .map_err(|_| "not a string".to_owned())
                        .and_then(|h| TokenHash::from_hex(h))
                        .map_err(|e| corrupt(attr::USED_HASHES, e))
                })
                .collect::<Result<_, _>>()?,
        },
    })
}

#[async_trait]
impl SessionStarter for DynamoSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn create_session(&self, session: &Session) -> Result<(), RepositoryError> {
        // A fresh id per call: a retried attempt of this call matches it, another call with the
        // same session does not (it is a ConcurrentUpdate).
        let write = SessionId::generate();
        let mut item = session_item(session);
        item.insert(attr::WRITE_ID.to_owned(), s(write.as_str()));
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk) OR #w = :w")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#w", attr::WRITE_ID)
            .expression_attribute_values(":w", s(write.as_str()))
            .send()
            .await;
        crate::conditional("DynamoDB PutItem", result)?
            .map(drop)
            .ok_or(RepositoryError::ConcurrentUpdate)
    }
}

#[async_trait]
impl SessionReader for DynamoSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, RepositoryError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(session_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?;
        output
            .item
            .as_ref()
            .map(|item| session_from_item(id, item))
            .transpose()
    }
}

#[async_trait]
impl SessionRotator for DynamoSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn rotate_session(
        &self,
        current: &Session,
        next: &Session,
    ) -> Result<(), RepositoryError> {
        let build = |e| RepositoryError::failed("building a DynamoDB transaction", e);
        let update = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(session_key(&current.id)))
            .update_expression("SET #h = :next, #e = :expires, #t = :ttl, #u = :used")
            .condition_expression("#h = :current AND #r = :false")
            .expression_attribute_names("#h", attr::TOKEN_HASH)
            .expression_attribute_names("#e", attr::EXPIRES)
            .expression_attribute_names("#t", attr::EXPIRES_AT)
            .expression_attribute_names("#r", attr::REVOKED)
            .expression_attribute_names("#u", attr::USED_HASHES)
            .expression_attribute_values(":used", used_hashes(next))
            .expression_attribute_values(":next", s(next.token_hash.as_str()))
            .expression_attribute_values(":expires", s(next.expires_at.to_rfc3339()))
            .expression_attribute_values(":ttl", n(next.expires_at.unix_seconds()))
            .expression_attribute_values(":current", s(current.token_hash.as_str()))
            .expression_attribute_values(":false", AttributeValue::Bool(false))
            .build()
            .map_err(build)?;
        // The user still exists and is in the session's epoch. Users stored before sessions
        // existed have no epoch attribute: that is epoch 0.
        let epoch_condition = if current.user_epoch == 0 {
            "attribute_exists(#pk) AND (attribute_not_exists(#se) OR #se = :epoch)"
        } else {
            "attribute_exists(#pk) AND #se = :epoch"
        };
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key(attr::PK, s(crate::users::user_key(&current.user_id)))
            .condition_expression(epoch_condition)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#se", attr::SESSION_EPOCH)
            .expression_attribute_values(":epoch", n(current.user_epoch))
            .build()
            .map_err(build)?;
        let items = vec![
            TransactWriteItem::builder().update(update).build(),
            TransactWriteItem::builder().condition_check(check).build(),
        ];
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(RepositoryError::ConcurrentUpdate),
        }
    }
}

#[async_trait]
impl SessionRevoker for DynamoSessionRepository {
    #[tracing::instrument(skip_all)]
    async fn revoke_session(&self, id: &SessionId) -> Result<(), RepositoryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(session_key(id)))
            .update_expression("SET #r = :true")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#r", attr::REVOKED)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .send()
            .await;
        // A failed condition: unknown (or expired and deleted by TTL), nothing to revoke.
        crate::conditional("DynamoDB UpdateItem", result)?;
        Ok(())
    }
}

#[async_trait]
impl StandingReader for DynamoSessionRepository {
    /// Two strongly consistent reads at once: the session's item and the user item's epoch and
    /// role (projected: the password hash never leaves the table here).
    #[tracing::instrument(skip_all)]
    async fn find_standing(
        &self,
        id: &SessionId,
        user: &UserId,
    ) -> Result<Option<Standing>, RepositoryError> {
        let account = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(crate::users::user_key(user)))
            .consistent_read(true)
            .projection_expression("#se, #ro")
            .expression_attribute_names("#se", attr::SESSION_EPOCH)
            .expression_attribute_names("#ro", attr::ROLE)
            .send();
        let (session, account) = futures::future::join(self.find_session(id), account).await;
        let account = account.map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?;
        let (Some(session), Some(item)) = (session?, account.item) else {
            return Ok(None);
        };
        // Users stored before sessions existed have no epoch attribute: that is epoch 0.
        let user_epoch = match item.get(attr::SESSION_EPOCH) {
            None => 0,
            Some(_) => USER.count(&item, attr::SESSION_EPOCH)?,
        };
        let role = USER.parsed(&item, attr::ROLE, Role::parse)?;
        Ok(Some(Standing {
            user_id: session.user_id,
            session_epoch: session.user_epoch,
            revoked: session.revoked,
            user_epoch,
            role,
        }))
    }
}
