//! Orders on Postgres: the orders schema's `orders`, `idempotency_keys` and `outbox` tables.
//! An order, its key and its messages go in one transaction; transitions are `UPDATE … WHERE
//! status = $current AND version = $version` in one transaction with their messages.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row as _};

use crate::{PgSchema, db};
use zx_domain::{
    Destination, IdempotencyKey, IdempotencyRecord, Order, OrderCreation, OrderCursor, OrderExpiry,
    OrderId, OrderLine, OrderPage, OrderQuery, OrderReader, OrderStatus, OrderWriter, Outbox,
    OutboxMessage, ParkedRow, RepositoryError, Row, RowKey, ShippingAddress, StatusChange,
    Timestamp, Unreadable, UserId,
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
    open: String,
}

impl PgOrderRepository {
    pub fn new(pool: PgPool, schema: &PgSchema) -> Self {
        Self {
            pool,
            orders: crate::qualified(schema, "orders"),
            keys: crate::qualified(schema, "idempotency_keys"),
            outbox: crate::qualified(schema, "outbox"),
            open: crate::qualified(schema, "open_orders"),
        }
    }
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
    RepositoryError::json(value, "serialising an order")
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
                "insert into {} (message_id, order_id, destination, body, created_at, trace)
                 values ($1, $2, $3, $4, $5, $6)",
                self.outbox
            ))
            .bind(&message.id)
            .bind(message.order_id.as_str())
            .bind(message.destination.as_str())
            .bind(&message.body)
            .bind(at(message.created_at))
            .bind(message.trace.as_deref())
            .execute(&mut **tx)
            .await
            .map_err(db("Postgres insert outbox"))?;
        }
        Ok(())
    }
}

#[async_trait]
impl OrderReader for PgOrderRepository {
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

    /// One statement.
    #[tracing::instrument(skip_all, fields(orders = ids.len()))]
    async fn find_orders(&self, ids: &[OrderId]) -> Result<Vec<Row<Order>>, RepositoryError> {
        let ids: Vec<&str> = ids.iter().map(OrderId::as_str).collect();
        Ok(sqlx::query(&format!(
            "select {COLUMNS} from {} where order_id = any($1)",
            self.orders
        ))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres select orders"))?
        .iter()
        .map(|row| Row {
            key: RowKey(row.try_get::<String, _>("order_id").unwrap_or_default()),
            value: order_from_row(row).map_err(Unreadable::from),
        })
        .collect())
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
}

#[async_trait]
impl OrderWriter for PgOrderRepository {
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
        open_limit: u32,
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
        // The customer's open orders, counted up only below the limit (the row lock orders
        // concurrent creations of one customer).
        let counted = sqlx::query(&format!(
            "insert into {open} (user_id, open) values ($1, 1)
             on conflict (user_id) do update set open = {open}.open + 1
                 where {open}.open < $2",
            open = self.open
        ))
        .bind(order.user_id.as_str())
        .bind(i32::try_from(open_limit).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres count open orders"))?;
        if counted.rows_affected() == 0 {
            tx.rollback().await.map_err(db("Postgres rollback"))?;
            return Ok(OrderCreation::TooManyOpen);
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
            "update {} set status = $3, history = $4, updated_at = $5, version = $6,
                 clock_at = $5
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
        if current.status.is_open() && !next.status.is_open() {
            sqlx::query(&format!(
                "update {} set open = greatest(open - 1, 0) where user_id = $1",
                self.open
            ))
            .bind(current.user_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db("Postgres count open orders"))?;
        }
        self.insert_messages(&mut tx, messages).await?;
        tx.commit().await.map_err(db("Postgres commit"))?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(order_id = %id))]
    async fn start_pending_clock(
        &self,
        id: &OrderId,
        at: Timestamp,
    ) -> Result<(), RepositoryError> {
        sqlx::query(&format!(
            "update {} set clock_at = coalesce(clock_at, $2)
             where order_id = $1 and status = 'pending'",
            self.orders
        ))
        .bind(id.as_str())
        .bind(self::at(at))
        .execute(&self.pool)
        .await
        .map_err(db("Postgres start pending clock"))?;
        Ok(())
    }
}

#[async_trait]
impl OrderExpiry for PgOrderRepository {
    async fn overdue(
        &self,
        status: OrderStatus,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Row<Order>>, RepositoryError> {
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from {} where status = $1 and clock_at < $2
                 and parked_reason is null
             order by clock_at, order_id limit $3",
            self.orders
        ))
        .bind(status.as_str())
        .bind(at(cutoff))
        .bind(i64::try_from(limit).unwrap_or(100))
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres select overdue orders"))?;
        Ok(rows
            .iter()
            .map(|row| Row {
                key: RowKey(row.try_get::<String, _>("order_id").unwrap_or_default()),
                value: order_from_row(row).map_err(Unreadable::from),
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(row = %key))]
    async fn park_order(&self, key: &RowKey, reason: &str) -> Result<(), RepositoryError> {
        sqlx::query(&format!(
            "update {} set parked_reason = $2 where order_id = $1",
            self.orders
        ))
        .bind(&key.0)
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(db("Postgres park order"))?;
        Ok(())
    }

    /// One bounded statement: up to `limit` keys past their expiry.
    #[tracing::instrument(skip_all)]
    async fn purge_expired_keys(&self, now: Timestamp, limit: u32) -> Result<u64, RepositoryError> {
        let done = sqlx::query(&format!(
            "delete from {keys} where (user_id, key) in
                 (select user_id, key from {keys} where expires_at < $1 limit $2)",
            keys = self.keys
        ))
        .bind(at(now))
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("Postgres purge idempotency keys"))?;
        Ok(done.rows_affected())
    }
}

/// An outbox row's key: `<created_at in unix microseconds>/<message id>` (it orders rows as the
/// relay reads them, so it is also the cursor).
fn outbox_key(created_at: time::OffsetDateTime, message_id: &str) -> RowKey {
    RowKey(format!(
        "{}/{message_id}",
        created_at.unix_timestamp_nanos() / 1000
    ))
}

fn split_outbox_key(key: &RowKey) -> Result<(time::OffsetDateTime, &str), RepositoryError> {
    let invalid = || RepositoryError::Corrupt(format!("not an outbox row key: {key}"));
    let (micros, id) = key.0.split_once('/').ok_or_else(invalid)?;
    let micros: i128 = micros.parse().map_err(|_| invalid())?;
    let created = time::OffsetDateTime::from_unix_timestamp_nanos(micros.saturating_mul(1000))
        .map_err(|_| invalid())?;
    Ok((created, id))
}

fn message_from_row(row: &PgRow) -> Result<OutboxMessage, RepositoryError> {
    let text = |name: &str| row.try_get::<String, _>(name).map_err(|e| corrupt(name, e));
    Ok(OutboxMessage {
        id: text("message_id")?,
        order_id: OrderId::parse(&text("order_id")?).map_err(|e| corrupt("outbox order_id", e))?,
        destination: Destination::parse(&text("destination")?)
            .map_err(|e| corrupt("destination", e))?,
        body: text("body")?,
        created_at: row
            .try_get::<time::OffsetDateTime, _>("created_at")
            .map(Timestamp::from_datetime)
            .map_err(|e| corrupt("created_at", e))?,
        // A trace that cannot be read is only a trace lost, never a row parked.
        trace: row.try_get::<Option<String>, _>("trace").ok().flatten(),
    })
}

fn row_key(row: &PgRow) -> RowKey {
    match (
        row.try_get::<time::OffsetDateTime, _>("created_at"),
        row.try_get::<String, _>("message_id"),
    ) {
        (Ok(created), Ok(id)) => outbox_key(created, &id),
        _ => RowKey(String::new()),
    }
}

#[async_trait]
impl Outbox for PgOrderRepository {
    async fn unsent(
        &self,
        cutoff: Timestamp,
        after: Option<&RowKey>,
        limit: usize,
    ) -> Result<Vec<Row<OutboxMessage>>, RepositoryError> {
        // Without `after`, from the start: before the epoch, below every id.
        let (after_at, after_id) = match after {
            Some(key) => split_outbox_key(key)?,
            None => (time::OffsetDateTime::UNIX_EPOCH, ""),
        };
        let rows = sqlx::query(&format!(
            "select message_id, order_id, destination, body, created_at, trace from {}
             where parked_at is null and created_at < $1
                 and (created_at, message_id) > ($3, $4)
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
        Ok(rows
            .iter()
            .map(|row| Row {
                key: row_key(row),
                value: message_from_row(row).map_err(Unreadable::from),
            })
            .collect())
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

    #[tracing::instrument(skip_all, fields(row = %key))]
    async fn park(&self, key: &RowKey, reason: &str) -> Result<(), RepositoryError> {
        let (_, id) = split_outbox_key(key)?;
        sqlx::query(&format!(
            "update {} set parked_at = now(), parked_reason = $2
             where message_id = $1 and parked_at is null",
            self.outbox
        ))
        .bind(id)
        .bind(reason)
        .execute(&self.pool)
        .await
        .map_err(db("Postgres park outbox row"))?;
        Ok(())
    }

    async fn parked(&self, limit: usize) -> Result<Vec<ParkedRow>, RepositoryError> {
        let rows = sqlx::query(&format!(
            "select message_id, created_at, body, parked_at, parked_reason from {}
             where parked_at is not null order by parked_at, message_id limit $1",
            self.outbox
        ))
        .bind(i64::try_from(limit).unwrap_or(100))
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres select parked outbox rows"))?;
        Ok(rows
            .iter()
            .map(|row| ParkedRow {
                key: row_key(row),
                reason: row
                    .try_get::<Option<String>, _>("parked_reason")
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                parked_at: row
                    .try_get::<time::OffsetDateTime, _>("parked_at")
                    .ok()
                    .map(Timestamp::from_datetime),
                body: row.try_get::<String, _>("body").unwrap_or_default(),
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(row = %key))]
    async fn unpark(&self, key: &RowKey) -> Result<bool, RepositoryError> {
        let (_, id) = split_outbox_key(key)?;
        let updated = sqlx::query(&format!(
            "update {} set parked_at = null, parked_reason = null
             where message_id = $1 and parked_at is not null",
            self.outbox
        ))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db("Postgres unpark outbox row"))?;
        Ok(updated.rows_affected() == 1)
    }
}
