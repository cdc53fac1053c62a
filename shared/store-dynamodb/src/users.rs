//! Users on DynamoDB, one table, three kinds of item under the partition key `pk`:
//! `USER#<id>` (the user), `EMAIL#<email>` and `USERNAME#<username key>` (uniqueness guards
//! holding the user id). Creating a user writes all three in one transaction, each conditional
//! on not existing, so uniqueness holds under any concurrency. Reads are strongly consistent.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem};
use zx_domain::{
    Email, PasswordHash, PasswordRehasher, RepositoryError, Role, Timestamp, UniqueField, User,
    UserId, UserReader, UserWriter, Username,
};

use crate::item::{Item, Strict, n, s};

/// Strict reads of user items.
const USER: Strict = Strict("user");

/// Attribute names, in one place.
mod attr {
    pub const PK: &str = "pk";
    pub const USER_ID: &str = "userId";
    pub const USERNAME: &str = "username";
    pub const EMAIL: &str = "email";
    pub const PASSWORD_HASH: &str = "passwordHash";
    pub const ROLE: &str = "role";
    pub const CREATED_AT: &str = "createdAt";
    pub const UPDATED_AT: &str = "updatedAt";
    pub const VERSION: &str = "version";
    pub const SESSION_EPOCH: &str = "sessionEpoch";
}

/// The nil UUID: never generated (ids are UUIDv7), read in place of a user for unknown e-mails.
const NO_USER: &str = "00000000-0000-0000-0000-000000000000";

pub(crate) fn user_key(id: &UserId) -> String {
    format!("USER#{id}")
}
fn email_key(email: &Email) -> String {
    format!("EMAIL#{email}")
}
fn username_key(username: &Username) -> String {
    format!("USERNAME#{}", username.key())
}

/// The users table.
#[derive(Debug, Clone)]
pub struct DynamoUserRepository {
    client: Client,
    table: String,
}

impl DynamoUserRepository {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn get(&self, pk: String) -> Result<Option<Item>, RepositoryError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?;
        Ok(output.item)
    }

    fn put_if_absent(&self, item: Item) -> Result<TransactWriteItem, RepositoryError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn guard_item(&self, pk: String, id: &UserId) -> Item {
        HashMap::from([
            (attr::PK.to_owned(), s(pk)),
            (attr::USER_ID.to_owned(), s(id.as_str())),
        ])
    }
}

fn user_item(user: &User) -> Item {
    HashMap::from([
        (attr::PK.to_owned(), s(user_key(&user.id))),
        (attr::USER_ID.to_owned(), s(user.id.as_str())),
        (attr::USERNAME.to_owned(), s(user.username.as_str())),
        (attr::EMAIL.to_owned(), s(user.email.as_str())),
        (
            attr::PASSWORD_HASH.to_owned(),
            s(user.password_hash.expose()),
        ),
        (attr::ROLE.to_owned(), s(user.role.as_str())),
        (attr::CREATED_AT.to_owned(), s(user.created_at.to_rfc3339())),
        (attr::UPDATED_AT.to_owned(), s(user.updated_at.to_rfc3339())),
        (attr::VERSION.to_owned(), n(user.version)),
        (attr::SESSION_EPOCH.to_owned(), n(user.session_epoch)),
    ])
}

/// Reads a stored user item back into the domain type.
fn user_from_item(item: &Item) -> Result<User, RepositoryError> {
    Ok(User {
        id: USER.parsed(item, attr::USER_ID, UserId::parse)?,
        username: USER.parsed(item, attr::USERNAME, Username::from_stored)?,
        email: USER.parsed(item, attr::EMAIL, Email::from_stored)?,
        password_hash: USER.parsed(item, attr::PASSWORD_HASH, |t| {
            PasswordHash::from_stored(t.to_owned())
        })?,
        role: USER.parsed(item, attr::ROLE, Role::parse)?,
        created_at: USER.parsed(item, attr::CREATED_AT, Timestamp::parse_rfc3339)?,
        updated_at: USER.parsed(item, attr::UPDATED_AT, Timestamp::parse_rfc3339)?,
        version: USER.count(item, attr::VERSION)?,
        // Users stored before sessions existed have none: epoch 0.
        session_epoch: match item.get(attr::SESSION_EPOCH) {
            None => 0,
            Some(_) => USER.count(item, attr::SESSION_EPOCH)?,
        },
    })
}

#[async_trait]
impl UserReader for DynamoUserRepository {
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, RepositoryError> {
        self.get(user_key(id))
            .await?
            .as_ref()
            .map(user_from_item)
            .transpose()
    }

    /// Two strongly consistent reads whether or not the e-mail is registered (the guard, then
    /// the user or, for an unknown e-mail, a user id no one has), so the store calls a login
    /// makes, and their timing, do not tell which e-mails exist.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepositoryError> {
        let guard = self.get(email_key(email)).await?;
        let id = match &guard {
            Some(guard) => Strict("email guard").parsed(guard, attr::USER_ID, UserId::parse)?,
            None => UserId::parse(NO_USER).map_err(RepositoryError::Corrupt)?,
        };
        let user = self.find_by_id(&id).await?;
        Ok(user.filter(|_| guard.is_some()))
    }
}

#[async_trait]
impl UserWriter for DynamoUserRepository {
    async fn create(&self, user: &User) -> Result<(), RepositoryError> {
        let items = vec![
            self.put_if_absent(user_item(user))?,
            self.put_if_absent(self.guard_item(email_key(&user.email), &user.id))?,
            self.put_if_absent(self.guard_item(username_key(&user.username), &user.id))?,
        ];
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(codes) if crate::condition_failed(&codes, 1) => {
                Err(RepositoryError::Conflict(UniqueField::Email))
            }
            Err(codes) if crate::condition_failed(&codes, 2) => {
                Err(RepositoryError::Conflict(UniqueField::Username))
            }
            Err(_) => Err(RepositoryError::ConcurrentUpdate),
        }
    }

    async fn update(&self, current: &User, next: &User) -> Result<(), RepositoryError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(user_item(next)))
            .condition_expression("#v = :expected")
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_values(":expected", n(current.version))
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        // Index of the guard Put for each changed unique field, to name the conflict.
        let mut guards: Vec<(usize, UniqueField)> = Vec::new();
        let mut move_guard =
            |items: &mut Vec<TransactWriteItem>, old: String, new: String, field| {
                guards.push((items.len(), field));
                items.push(self.put_if_absent(self.guard_item(new, &next.id))?);
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .key(attr::PK, s(old))
                    .condition_expression("#uid = :uid")
                    .expression_attribute_names("#uid", attr::USER_ID)
                    .expression_attribute_values(":uid", s(next.id.as_str()))
                    .build()
                    .map_err(|e| RepositoryError::failed("building a DynamoDB Delete", e))?;
                items.push(TransactWriteItem::builder().delete(delete).build());
                Ok::<_, RepositoryError>(())
            };
        if current.email != next.email {
            move_guard(
                &mut items,
                email_key(&current.email),
                email_key(&next.email),
                UniqueField::Email,
            )?;
        }
        if current.username.key() != next.username.key() {
            move_guard(
                &mut items,
                username_key(&current.username),
                username_key(&next.username),
                UniqueField::Username,
            )?;
        }
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(codes) => Err(guards
                .iter()
                .find(|(index, _)| crate::condition_failed(&codes, *index))
                .map_or(RepositoryError::ConcurrentUpdate, |(_, field)| {
                    RepositoryError::Conflict(*field)
                })),
        }
    }
}

#[async_trait]
impl PasswordRehasher for DynamoUserRepository {
    /// One `UpdateItem` of the user item touching only `passwordHash`, `version` and
    /// `updatedAt` (users-login's grant allows no other attribute).
    async fn replace_password_hash(
        &self,
        current: &User,
        next: &User,
    ) -> Result<(), RepositoryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(user_key(&current.id)))
            .update_expression("SET #h = :hash, #v = :next, #u = :updated")
            .condition_expression("#v = :expected")
            .expression_attribute_names("#h", attr::PASSWORD_HASH)
            .expression_attribute_names("#v", attr::VERSION)
            .expression_attribute_names("#u", attr::UPDATED_AT)
            .expression_attribute_values(":hash", s(next.password_hash.expose()))
            .expression_attribute_values(":next", n(next.version))
            .expression_attribute_values(":updated", s(next.updated_at.to_rfc3339()))
            .expression_attribute_values(":expected", n(current.version))
            .send()
            .await;
        crate::conditional("DynamoDB UpdateItem", result)?
            .map(drop)
            .ok_or(RepositoryError::ConcurrentUpdate)
    }
}
