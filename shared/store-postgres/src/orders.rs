//! Orders on Postgres: the orders schema's `orders`, `idempotency_keys` and `outbox` tables.
//! An order, its key and its messages go in one transaction; transitions are `UPDATE … WHERE
//! status = $current AND version = $version` in one transaction with their messages.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use crate::PgSchema;
use zx_domain::{
    Destination, IdempotencyKey, IdempotencyRecord, Order, OrderCreation, OrderCursor, OrderId,
    OrderLine, OrderPage, OrderQuery, OrderRepository, OrderStatus, Outbox, OutboxMessage,
    RepositoryError, ShippingAddress, StatusChange, Timestamp, UserId,
};

const COLUMNS: &str = "order_id, user_id, status, lines, history, total, shipping_address, \
                       created_at, updated_at, version";

/// The orders tables of one schema.
#[derive(Debug, Clone)]
pub struct PgOrderRepository {
    pool: PgPool,
    orders: String,
    keys: String,
    outbox: String,
}

impl PgOrderRepository {
    pub fn new(pool: PgPool, schema: &PgSchema) -> Self {
        Self {
            pool,
            orders: crate::qualified(schema, "orders"),
            keys: crate::qualified(schema, "idempotency_keys"),
            outbox: crate::qualified(schema, "outbox"),
        }
    }
}

fn db(operation: &'static str) -> impl Fn(sqlx::Error) -> RepositoryError {
    move |e| crate::db_error(operation, e)
}

fn corrupt(name: &str, e: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Corrupt(format!("order {name}: {e}"))
}

fn at(time: Timestamp) -> time::OffsetDateTime {
    time.as_datetime()
}

fn order_from_row(row: &PgRow) -> Result<Order, RepositoryError> {
    let text = |name: &str| row.try_get::<String, _>(name).map_err(|e| corrupt(name, e));
    let time = |name: &str| {
        row.try_get::<time::OffsetDateTime, _>(name)
            .map(Timestamp::from_datetime)
            .map_err(|e| corrupt(name, e))
    };
    let lines: Vec<OrderLine> =
        serde_json::from_str(&text("lines")?).map_err(|e| corrupt("lines", e))?;
    let history: Vec<StatusChange> =
        serde_json::from_str(&text("history")?).map_err(|e| corrupt("history", e))?;
    let address: Option<String> = row
        .try_get("shipping_address")
        .map_err(|e| corrupt("shipping_address", e))?;
    Ok(Order {
        id: OrderId::parse(&text("order_id")?).map_err(|e| corrupt("order_id", e))?,
        user_id: UserId::parse(&text("user_id")?).map_err(|e| corrupt("user_id", e))?,
        status: OrderStatus::parse(&text("status")?).map_err(|e| corrupt("status", e))?,
        lines,
        history,
        total: row.try_get("total").map_err(|e| corrupt("total", e))?,
        shipping_address: address
            .map(|a| ShippingAddress::parse(&a))
            .transpose()
            .map_err(|e| corrupt("shipping_address", e))?,
        created_at: time("created_at")?,
        updated_at: time("updated_at")?,
        version: row
            .try_get::<i64, _>("version")
            .ok()
            .and_then(|v| u64::try_from(v).ok())
            .ok_or_else(|| corrupt("version", "not a version"))?,
    })
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, RepositoryError> {
    serde_json::to_string(value).map_err(|e| RepositoryError::failed("serialising an order", e))
}

fn version(order: &Order) -> i64 {
    i64::try_from(order.version).unwrap_or(i64::MAX)
}

impl PgOrderRepository {
    async fn insert_messages(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        messages: &[OutboxMessage],
    ) -> Result<(), RepositoryError> {
        for message in messages {
            sqlx::query(&format!(
                "insert into {} (message_id, order_id, destination, body, created_at)
                 values ($1, $2, $3, $4, $5)",
                self.outbox
            ))
            .bind(&message.id)
            .bind(message.order_id.as_str())
            .bind(message.destination.as_str())
            .bind(&message.body)
            .bind(at(message.created_at))
            .execute(&mut **tx)
            .await
            .map_err(db("Postgres insert outbox"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl OrderRepository for PgOrderRepository {
    #[tracing::instrument(skip_all, fields(order_id = %id))]
    async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, RepositoryError> {
        sqlx::query(&format!(
            "select {COLUMNS} from {} where order_id = $1",
            self.orders
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("Postgres select order"))?
        .as_ref()
        .map(order_from_row)
        .transpose()
    }

    #[tracing::instrument(skip_all)]
    async fn list_orders(&self, query: &OrderQuery) -> Result<OrderPage, RepositoryError> {
        let mut sql: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("select {COLUMNS} from {} where true", self.orders));
        if let Some(user) = &query.user_id {
            sql.push(" and user_id = ")
                .push_bind(user.as_str().to_owned());
        }
        if let Some(status) = query.status {
            sql.push(" and status = ").push_bind(status.as_str());
        }
        if let Some(after) = &query.after {
            sql.push(" and (created_at, order_id) < (")
                .push_bind(at(after.created_at))
                .push(", ")
                .push_bind(after.id.as_str().to_owned())
                .push(")");
        }
        let limit = query.limit.get();
        sql.push(" order by created_at desc, order_id desc limit ")
            .push_bind(i64::try_from(limit + 1).unwrap_or(101));
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(db("Postgres list orders"))?;
        let mut items = rows
            .iter()
            .map(order_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(OrderCursor::after)
        } else {
            None
        };
        Ok(OrderPage { items, next })
    }

    async fn find_idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, RepositoryError> {
        let row = sqlx::query(&format!(
            "select fingerprint, order_id, expires_at from {}
             where user_id = $1 and key = $2 and expires_at > now()",
            self.keys
        ))
        .bind(user.as_str())
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("Postgres select idempotency key"))?;
        row.map(|row| {
            Ok(IdempotencyRecord {
                user_id: user.clone(),
                key: key.clone(),
                fingerprint: row
                    .try_get("fingerprint")
                    .map_err(|e| corrupt("fingerprint", e))?,
                order_id: row
                    .try_get::<String, _>("order_id")
                    .ok()
                    .and_then(|id| OrderId::parse(&id).ok())
                    .ok_or_else(|| corrupt("idempotency order_id", "invalid"))?,
                expires_at: row
                    .try_get::<time::OffsetDateTime, _>("expires_at")
                    .map(Timestamp::from_datetime)
                    .map_err(|e| corrupt("expires_at", e))?,
            })
        })
        .transpose()
    }

    #[tracing::instrument(skip_all, fields(order_id = %order.id))]
    async fn create_order(
        &self,
        order: &Order,
        key: &IdempotencyRecord,
        messages: &[OutboxMessage],
    ) -> Result<OrderCreation, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        // Takes the key, or (when a concurrent request holds it) waits for that transaction
        // and then finds the key taken. An expired key is taken over.
        let claimed = sqlx::query(&format!(
            "insert into {keys} (user_id, key, fingerprint, order_id, expires_at)
             values ($1, $2, $3, $4, $5)
             on conflict (user_id, key) do update
                 set fingerprint = excluded.fingerprint, order_id = excluded.order_id,
                     expires_at = excluded.expires_at
                 where {keys}.expires_at <= now()",
            keys = self.keys
        ))
        .bind(key.user_id.as_str())
        .bind(key.key.as_str())
        .bind(&key.fingerprint)
        .bind(key.order_id.as_str())
        .bind(at(key.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres insert idempotency key"))?;
        if claimed.rows_affected() == 0 {
            tx.rollback().await.map_err(db("Postgres rollback"))?;
            return match self.find_idempotency(&key.user_id, &key.key).await? {
                Some(existing) => Ok(OrderCreation::KeyTaken(existing)),
                None => Err(RepositoryError::ConcurrentUpdate),
            };
        }
        sqlx::query(&format!(
            "insert into {} ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            self.orders
        ))
        .bind(order.id.as_str())
        .bind(order.user_id.as_str())
        .bind(order.status.as_str())
        .bind(json(&order.lines)?)
        .bind(json(&order.history)?)
        .bind(order.total)
        .bind(order.shipping_address.as_ref().map(|a| a.as_str()))
        .bind(at(order.created_at))
        .bind(at(order.updated_at))
        .bind(version(order))
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres insert order"))?;
        self.insert_messages(&mut tx, messages).await?;
        tx.commit().await.map_err(db("Postgres commit"))?;
        Ok(OrderCreation::Created)
    }

    #[tracing::instrument(skip_all, fields(order_id = %current.id, to = %next.status))]
    async fn update_order(
        &self,
        current: &Order,
        next: &Order,
        messages: &[OutboxMessage],
    ) -> Result<(), RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        let updated = sqlx::query(&format!(
            "update {} set status = $3, history = $4, updated_at = $5, version = $6
             where order_id = $1 and status = $2 and version = $7",
            self.orders
        ))
        .bind(current.id.as_str())
        .bind(current.status.as_str())
        .bind(next.status.as_str())
        .bind(json(&next.history)?)
        .bind(at(next.updated_at))
        .bind(version(next))
        .bind(version(current))
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres update order"))?;
        if updated.rows_affected() == 0 {
            tx.rollback().await.map_err(db("Postgres rollback"))?;
            return Err(RepositoryError::ConcurrentUpdate);
        }
        self.insert_messages(&mut tx, messages).await?;
        tx.commit().await.map_err(db("Postgres commit"))?;
        Ok(())
    }

    async fn stale_pending(
        &self,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Order>, RepositoryError> {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from {} where status = 'pending' and created_at < $1
             order by created_at, order_id limit $2",
            self.orders
        ))
        .bind(at(cutoff))
        .bind(i64::try_from(limit).unwrap_or(100))
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres select stale orders"))?;
        rows.iter().map(order_from_row).collect()
    }
}

#[async_trait]
impl Outbox for PgOrderRepository {
    async fn unsent(
        &self,
        cutoff: Timestamp,
        after: Option<&OutboxMessage>,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, RepositoryError> {
        // Without `after`, from the start: before the epoch, below every id.
        let (after_at, after_id) = after.map_or((time::OffsetDateTime::UNIX_EPOCH, ""), |m| {
            (at(m.created_at), m.id.as_str())
        });
        let rows = sqlx::query(&format!(
            "select message_id, order_id, destination, body, created_at from {}
             where created_at < $1 and (created_at, message_id) > ($3, $4)
             order by created_at, message_id limit $2",
            self.outbox
        ))
        .bind(at(cutoff))
        .bind(i64::try_from(limit).unwrap_or(100))
        .bind(after_at)
        .bind(after_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres select outbox"))?;
        rows.iter()
            .map(|row| {
                let text =
                    |name: &str| row.try_get::<String, _>(name).map_err(|e| corrupt(name, e));
                Ok(OutboxMessage {
                    id: text("message_id")?,
                    order_id: OrderId::parse(&text("order_id")?)
                        .map_err(|e| corrupt("outbox order_id", e))?,
                    destination: Destination::parse(&text("destination")?)
                        .map_err(|e| corrupt("destination", e))?,
                    body: text("body")?,
                    created_at: row
                        .try_get::<time::OffsetDateTime, _>("created_at")
                        .map(Timestamp::from_datetime)
                        .map_err(|e| corrupt("created_at", e))?,
                })
            })
            .collect()
    }

    async fn mark_sent(&self, messages: &[OutboxMessage]) -> Result<(), RepositoryError> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
        sqlx::query(&format!(
            "delete from {} where message_id = any($1)",
            self.outbox
        ))
        .bind(&ids)
        .execute(&self.pool)
        .await
        .map_err(db("Postgres delete outbox"))?;
        Ok(())
    }
}
