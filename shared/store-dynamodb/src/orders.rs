//! Orders on DynamoDB: one table (`pk`, `sk`) holding orders, idempotency keys and the outbox.
//!
//! - Order: `pk = ORDER#<id>`, `sk = ORDER`; lines and history as JSON. Three GSIs, all sorted
//!   by `createdKey = <created millis, 13 digits>#<id>`:
//!   `by-user` (`userKey = <user id>`): a customer's orders;
//!   `by-shard` (`shardKey = ALL#<shard>`): every order, spread over [`OrderId::SHARDS`]
//!   partitions so a sale day's writes never land on one partition;
//!   `by-status` (`statusKey = <status>#<shard>`): orders by status, spread the same way.
//!   Shop-wide listings query every shard and merge (a page costs one query per shard).
//! - Idempotency key: `pk = IDEMPOTENCY#<user id>#<key>`, `sk = KEY`, with a TTL (`expiresAt`).
//!   `clockAt` (epoch millis): when the order's current clock started (a pending order's when
//!   its reserve was sent, absent before; otherwise when it entered its status). Expiry queries
//!   `by-status` and filters on it. A parked order (unreadable) loses its `statusKey`, so it
//!   leaves `by-status` (and expiry) and keeps `parkedReason`.
//! - Open orders of a customer: `pk = OPEN#<user id>`, `sk = OPEN`, `open` (a count), changed
//!   in the same transaction as the order's creation and its leaving pending/confirmed.
//! - Idempotency key: `pk = IDEMPOTENCY#<user id>#<key>`, `sk = KEY`, with a TTL (`expiresAt`).
//! - Outbox message: `pk = OUTBOX#<shard of its order>`, `sk = <created millis>#<message id>`;
//!   deleted once sent. The relay queries every shard, oldest first, paging by `sk`. A parked
//!   row moves (one transaction) to `pk = OUTBOX-PARKED` with the same `sk`, `parkedFrom`,
//!   `parkedReason`, `parkedAt`.
//!
//! An order, its key, its customer's count and its messages are one `TransactWriteItems`; a
//! transition is one too (the order's update conditioned on status and version, the count,
//! plus its messages).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem, Update};
use futures::future::try_join_all;
use zx_domain::{
    Destination, IdempotencyKey, IdempotencyRecord, Order, OrderCreation, OrderCursor, OrderExpiry,
    OrderId, OrderPage, OrderQuery, OrderReader, OrderStatus, OrderWriter, Outbox, OutboxMessage,
    ParkedRow, RepositoryError, Row, RowKey, ShippingAddress, Timestamp, Unreadable, UserId,
};

use crate::item::{Item, Strict, n, s, text};

/// Strict reads of order, outbox and idempotency items.
const ORDER: Strict = Strict("order");
const MESSAGE: Strict = Strict("outbox");
const KEY: Strict = Strict("idempotency");

fn json<T: serde::Serialize>(value: &T) -> Result<String, RepositoryError> {
    RepositoryError::json(value, "serialising an order")
}

mod attr {
    pub const PK: &str = "pk";
    pub const SK: &str = "sk";
    pub const USER_KEY: &str = "userKey";
    pub const SHARD_KEY: &str = "shardKey";
    pub const STATUS_KEY: &str = "statusKey";
    pub const CREATED_KEY: &str = "createdKey";
    pub const ORDER_ID: &str = "orderId";
    pub const USER_ID: &str = "userId";
    pub const STATUS: &str = "status";
    pub const LINES: &str = "lines";
    pub const HISTORY: &str = "history";
    pub const TOTAL: &str = "total";
    pub const ADDRESS: &str = "shippingAddress";
    pub const CREATED_AT: &str = "createdAt";
    pub const UPDATED_AT: &str = "updatedAt";
    pub const VERSION: &str = "version";
    pub const FINGERPRINT: &str = "fingerprint";
    pub const EXPIRES_AT: &str = "expiresAt";
    pub const MESSAGE_ID: &str = "messageId";
    pub const DESTINATION: &str = "destination";
    pub const BODY: &str = "body";
    pub const TRACE: &str = "trace";
    pub const CLOCK_AT: &str = "clockAt";
    pub const OPEN: &str = "open";
    pub const PARKED_REASON: &str = "parkedReason";
    pub const PARKED_AT: &str = "parkedAt";
    pub const PARKED_FROM: &str = "parkedFrom";
}

const BY_USER: &str = "by-user";
const BY_SHARD: &str = "by-shard";
const BY_STATUS: &str = "by-status";
const ORDER_SK: &str = "ORDER";
const KEY_SK: &str = "KEY";
const OPEN_SK: &str = "OPEN";
const PARKED_PK: &str = "OUTBOX-PARKED";

fn order_pk(id: &OrderId) -> String {
    format!("ORDER#{id}")
}

fn key_pk(user: &UserId, key: &IdempotencyKey) -> String {
    format!("IDEMPOTENCY#{user}#{}", key.as_str())
}

fn open_pk(user: &UserId) -> String {
    format!("OPEN#{user}")
}

/// An outbox row's key as the relay sees it: `<pk>/<sk>`.
fn outbox_row_key(pk: &str, sk: &str) -> RowKey {
    RowKey(format!("{pk}/{sk}"))
}

fn split_row_key(key: &RowKey) -> Result<(&str, &str), RepositoryError> {
    key.0
        .split_once('/')
        .ok_or_else(|| RepositoryError::Corrupt(format!("not an outbox row key: {key}")))
}

fn outbox_pk(shard: u8) -> String {
    format!("OUTBOX#{shard:02}")
}

fn millis_key(at: &Timestamp) -> String {
    format!("{:013}", at.unix_millis().max(0))
}

fn created_key(at: &Timestamp, id: &OrderId) -> String {
    format!("{}#{id}", millis_key(at))
}

fn status_key(status: OrderStatus, id: &OrderId) -> String {
    format!("{status}#{:02}", id.shard())
}

fn order_item(order: &Order) -> Result<Item, RepositoryError> {
    let mut item = HashMap::from([
        (attr::PK.to_owned(), s(order_pk(&order.id))),
        (attr::SK.to_owned(), s(ORDER_SK)),
        (attr::USER_KEY.to_owned(), s(order.user_id.as_str())),
        (
            attr::SHARD_KEY.to_owned(),
            s(format!("ALL#{:02}", order.id.shard())),
        ),
        (
            attr::STATUS_KEY.to_owned(),
            s(status_key(order.status, &order.id)),
        ),
        (
            attr::CREATED_KEY.to_owned(),
            s(created_key(&order.created_at, &order.id)),
        ),
        (attr::ORDER_ID.to_owned(), s(order.id.as_str())),
        (attr::USER_ID.to_owned(), s(order.user_id.as_str())),
        (attr::STATUS.to_owned(), s(order.status.as_str())),
        (attr::LINES.to_owned(), s(json(&order.lines)?)),
        (attr::HISTORY.to_owned(), s(json(&order.history)?)),
        (attr::TOTAL.to_owned(), n(order.total)),
        (
            attr::CREATED_AT.to_owned(),
            s(order.created_at.to_rfc3339()),
        ),
        (
            attr::UPDATED_AT.to_owned(),
            s(order.updated_at.to_rfc3339()),
        ),
        (attr::VERSION.to_owned(), n(order.version)),
    ]);
    if let Some(address) = &order.shipping_address {
        item.insert(attr::ADDRESS.to_owned(), s(address.as_str()));
    }
    Ok(item)
}

fn order_from_item(item: &Item) -> Result<Order, RepositoryError> {
    Ok(Order {
        id: ORDER.parsed(item, attr::ORDER_ID, OrderId::parse)?,
        user_id: ORDER.parsed(item, attr::USER_ID, UserId::parse)?,
        status: ORDER.parsed(item, attr::STATUS, OrderStatus::parse)?,
        lines: ORDER.json(item, attr::LINES)?,
        history: ORDER.json(item, attr::HISTORY)?,
        total: ORDER.number(item, attr::TOTAL)?,
        shipping_address: text(item, attr::ADDRESS)
            .map(ShippingAddress::parse)
            .transpose()
            .map_err(|e| ORDER.corrupt(attr::ADDRESS, e))?,
        created_at: ORDER.parsed(item, attr::CREATED_AT, Timestamp::parse_rfc3339)?,
        updated_at: ORDER.parsed(item, attr::UPDATED_AT, Timestamp::parse_rfc3339)?,
        version: ORDER.count(item, attr::VERSION)?,
    })
}

fn message_item(message: &OutboxMessage) -> Item {
    let mut item = HashMap::from([
        (attr::PK.to_owned(), s(outbox_pk(message.order_id.shard()))),
        (
            attr::SK.to_owned(),
            s(format!(
                "{}#{}",
                millis_key(&message.created_at),
                message.id
            )),
        ),
        (attr::MESSAGE_ID.to_owned(), s(&message.id)),
        (attr::ORDER_ID.to_owned(), s(message.order_id.as_str())),
        (
            attr::DESTINATION.to_owned(),
            s(message.destination.as_str()),
        ),
        (attr::BODY.to_owned(), s(&message.body)),
        (
            attr::CREATED_AT.to_owned(),
            s(message.created_at.to_rfc3339()),
        ),
    ]);
    if let Some(trace) = &message.trace {
        item.insert(attr::TRACE.to_owned(), s(trace));
    }
    item
}

fn message_from_item(item: &Item) -> Result<OutboxMessage, RepositoryError> {
    Ok(OutboxMessage {
        id: MESSAGE.text(item, attr::MESSAGE_ID)?.to_owned(),
        order_id: MESSAGE.parsed(item, attr::ORDER_ID, OrderId::parse)?,
        destination: MESSAGE.parsed(item, attr::DESTINATION, Destination::parse)?,
        body: MESSAGE.text(item, attr::BODY)?.to_owned(),
        created_at: MESSAGE.parsed(item, attr::CREATED_AT, Timestamp::parse_rfc3339)?,
        trace: crate::item::text(item, attr::TRACE).map(str::to_owned),
    })
}

fn put(table: &str, item: Item) -> Result<TransactWriteItem, RepositoryError> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .build()
        .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// One partition's query: `(attribute, value)` of the partition key, `(attribute, upper
/// bound)` of the sort key.
struct PartitionQuery<'a> {
    index: Option<&'a str>,
    key: (&'a str, String),
    sort: (&'a str, Option<String>),
    lower: Option<String>,
    newest_first: bool,
    limit: usize,
    status: Option<OrderStatus>,
    /// Only items whose clock started before this (epoch millis).
    clock_before: Option<i64>,
}

impl Default for PartitionQuery<'_> {
    fn default() -> Self {
        Self {
            index: None,
            key: (attr::PK, String::new()),
            sort: (attr::SK, None),
            lower: None,
            newest_first: false,
            limit: 100,
            status: None,
            clock_before: None,
        }
    }
}

/// The orders table.
#[derive(Debug, Clone)]
pub struct DynamoOrderRepository {
    client: Client,
    table: String,
}

impl DynamoOrderRepository {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Up to `q.limit` items of one partition (of the table or an index) with sort keys below
    /// `q.sort`'s bound (and from `q.lower`, inclusive), newest or oldest first, passing the
    /// `status` filter when given.
    async fn query_partition(&self, q: PartitionQuery<'_>) -> Result<Vec<Item>, RepositoryError> {
        let PartitionQuery {
            index,
            key,
            sort,
            lower,
            newest_first,
            limit,
            status,
            clock_before,
        } = q;
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut condition = "#k = :k".to_owned();
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_owned))
                .expression_attribute_names("#k", key.0)
                .expression_attribute_values(":k", s(key.1.clone()))
                .scan_index_forward(!newest_first)
                .limit(i32::try_from(limit.clamp(1, 100)).unwrap_or(100))
                .set_exclusive_start_key(start.take());
            match (&sort.1, &lower) {
                // Below the bound either way: newest first from a cursor, or oldest first up to
                // a cutoff; from `lower` (inclusive) when given.
                (Some(bound), Some(lower)) => {
                    condition.push_str(" AND #s BETWEEN :lo AND :s");
                    request = request
                        .expression_attribute_names("#s", sort.0)
                        .expression_attribute_values(":s", s(bound.clone()))
                        .expression_attribute_values(":lo", s(lower.clone()));
                }
                (Some(bound), None) => {
                    condition.push_str(" AND #s < :s");
                    request = request
                        .expression_attribute_names("#s", sort.0)
                        .expression_attribute_values(":s", s(bound.clone()));
                }
                (None, _) => {}
            }
            if let Some(status) = status {
                request = request
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", attr::STATUS)
                    .expression_attribute_values(":status", s(status.as_str()));
            }
            if let Some(before) = clock_before {
                request = request
                    .filter_expression("#clock < :clock")
                    .expression_attribute_names("#clock", attr::CLOCK_AT)
                    .expression_attribute_values(":clock", n(before));
            }
            let output = request
                .key_condition_expression(condition)
                .send()
                .await
                .map_err(|e| crate::sdk_error("DynamoDB Query", e))?;
            items.extend(output.items.unwrap_or_default());
            match output.last_evaluated_key {
                Some(key) if items.len() < limit => start = Some(key),
                _ => break,
            }
        }
        items.truncate(limit);
        Ok(items)
    }

    /// Orders of one index, newest first, merged over `partitions`.
    async fn list_merged(
        &self,
        index: &str,
        key_attr: &str,
        partitions: Vec<String>,
        query: &OrderQuery,
        status_filter: Option<OrderStatus>,
    ) -> Result<OrderPage, RepositoryError> {
        let limit = query.limit.get();
        let bound = query
            .after
            .as_ref()
            .map(|after| created_key(&after.created_at, &after.id));
        let pages = try_join_all(partitions.into_iter().map(|partition| {
            self.query_partition(PartitionQuery {
                index: Some(index),
                key: (key_attr, partition),
                sort: (attr::CREATED_KEY, bound.clone()),
                lower: None,
                newest_first: true,
                limit: limit + 1,
                status: status_filter,
                clock_before: None,
            })
        }))
        .await?;
        let mut orders = pages
            .iter()
            .flatten()
            .map(order_from_item)
            .collect::<Result<Vec<_>, _>>()?;
        orders.sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
        let next = if orders.len() > limit {
            orders.truncate(limit);
            orders.last().map(OrderCursor::after)
        } else {
            None
        };
        Ok(OrderPage {
            items: orders,
            next,
        })
    }

    fn shards(prefix: &str) -> Vec<String> {
        (0..OrderId::SHARDS)
            .map(|shard| format!("{prefix}#{shard:02}"))
            .collect()
    }
}

#[async_trait]
impl OrderReader for DynamoOrderRepository {
    #[tracing::instrument(skip_all, fields(order_id = %id))]
    async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, RepositoryError> {
        self.client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(order_pk(id)))
            .key(attr::SK, s(ORDER_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?
            .item
            .as_ref()
            .map(order_from_item)
            .transpose()
    }

    /// One `BatchGetItem` (consistent reads) per 100 orders.
    #[tracing::instrument(skip_all, fields(orders = ids.len()))]
    async fn find_orders(&self, ids: &[OrderId]) -> Result<Vec<Row<Order>>, RepositoryError> {
        let keys = ids
            .iter()
            .map(|id| {
                Item::from([
                    (attr::PK.to_owned(), s(order_pk(id))),
                    (attr::SK.to_owned(), s(ORDER_SK)),
                ])
            })
            .collect();
        Ok(
            crate::stock::batch_get_items(&self.client, &self.table, keys, &[])
                .await?
                .iter()
                .map(|item| Row {
                    key: RowKey(
                        text(item, attr::PK)
                            .and_then(|pk| pk.strip_prefix("ORDER#"))
                            .unwrap_or_default()
                            .to_owned(),
                    ),
                    value: order_from_item(item).map_err(Unreadable::from),
                })
                .collect(),
        )
    }

    #[tracing::instrument(skip_all)]
    async fn list_orders(&self, query: &OrderQuery) -> Result<OrderPage, RepositoryError> {
        match (&query.user_id, query.status) {
            (Some(user), status) => {
                self.list_merged(
                    BY_USER,
                    attr::USER_KEY,
                    vec![user.as_str().to_owned()],
                    query,
                    status,
                )
                .await
            }
            (None, Some(status)) => {
                self.list_merged(
                    BY_STATUS,
                    attr::STATUS_KEY,
                    Self::shards(status.as_str()),
                    query,
                    None,
                )
                .await
            }
            (None, None) => {
                self.list_merged(BY_SHARD, attr::SHARD_KEY, Self::shards("ALL"), query, None)
                    .await
            }
        }
    }
}

#[async_trait]
impl OrderWriter for DynamoOrderRepository {
    async fn find_idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, RepositoryError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(key_pk(user, key)))
            .key(attr::SK, s(KEY_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?
            .item;
        let Some(item) = item else { return Ok(None) };
        let expires = KEY.number(&item, attr::EXPIRES_AT)?;
        // TTL deletion is lazy: an expired key is gone even while the item lingers.
        if expires <= Timestamp::now().unix_seconds() {
            return Ok(None);
        }
        Ok(Some(IdempotencyRecord {
            user_id: user.clone(),
            key: key.clone(),
            fingerprint: KEY.text(&item, attr::FINGERPRINT)?.to_owned(),
            order_id: KEY.parsed(&item, attr::ORDER_ID, OrderId::parse)?,
            expires_at: Timestamp::from_unix_millis(expires.saturating_mul(1000))
                .ok_or_else(|| KEY.corrupt(attr::EXPIRES_AT, "out of range"))?,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %order.id))]
    async fn create_order(
        &self,
        order: &Order,
        key: &IdempotencyRecord,
        messages: &[OutboxMessage],
        open_limit: u32,
    ) -> Result<OrderCreation, RepositoryError> {
        let order_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(order_item(order)?))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        let key_put = Put::builder()
            .table_name(&self.table)
            .item(attr::PK, s(key_pk(&key.user_id, &key.key)))
            .item(attr::SK, s(KEY_SK))
            .item(attr::FINGERPRINT, s(&key.fingerprint))
            .item(attr::ORDER_ID, s(key.order_id.as_str()))
            .item(attr::EXPIRES_AT, n(key.expires_at.unix_seconds()))
            .condition_expression("attribute_not_exists(#pk) OR #expires <= :now")
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_values(":now", n(Timestamp::now().unix_seconds()))
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        let count = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(open_pk(&order.user_id)))
            .key(attr::SK, s(OPEN_SK))
            .update_expression("SET #open = if_not_exists(#open, :zero) + :one")
            .condition_expression("attribute_not_exists(#open) OR #open < :max")
            .expression_attribute_names("#open", attr::OPEN)
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(open_limit))
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
        let mut items = vec![
            TransactWriteItem::builder().put(key_put).build(),
            TransactWriteItem::builder().put(order_put).build(),
            TransactWriteItem::builder().update(count).build(),
        ];
        for message in messages {
            items.push(put(&self.table, message_item(message))?);
        }
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(OrderCreation::Created),
            Err(reasons) if crate::condition_failed(&reasons, 0) => {
                match self.find_idempotency(&key.user_id, &key.key).await? {
                    Some(existing) => Ok(OrderCreation::KeyTaken(existing)),
                    None => Err(RepositoryError::ConcurrentUpdate),
                }
            }
            Err(reasons) if crate::condition_failed(&reasons, 2) => Ok(OrderCreation::TooManyOpen),
            Err(_) => Err(RepositoryError::failed(
                "DynamoDB create order",
                "an order with this id exists",
            )),
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %current.id, to = %next.status))]
    async fn update_order(
        &self,
        current: &Order,
        next: &Order,
        messages: &[OutboxMessage],
    ) -> Result<(), RepositoryError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(order_pk(&current.id)))
            .key(attr::SK, s(ORDER_SK))
            .update_expression(
                "SET #status = :to, #statusKey = :statusKey, #history = :history, \
                 #updated = :updated, #version = :next, #clock = :clock",
            )
            .condition_expression("#status = :from AND #version = :version")
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_names("#statusKey", attr::STATUS_KEY)
            .expression_attribute_names("#history", attr::HISTORY)
            .expression_attribute_names("#updated", attr::UPDATED_AT)
            .expression_attribute_names("#version", attr::VERSION)
            .expression_attribute_names("#clock", attr::CLOCK_AT)
            .expression_attribute_values(":to", s(next.status.as_str()))
            .expression_attribute_values(":statusKey", s(status_key(next.status, &next.id)))
            .expression_attribute_values(":history", s(json(&next.history)?))
            .expression_attribute_values(":updated", s(next.updated_at.to_rfc3339()))
            .expression_attribute_values(":next", n(next.version))
            .expression_attribute_values(":from", s(current.status.as_str()))
            .expression_attribute_values(":version", n(current.version))
            .expression_attribute_values(":clock", n(next.updated_at.unix_millis()))
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        if current.status.is_open() && !next.status.is_open() {
            // Unconditional: a count that is off (orders from before it existed) must never
            // stop a transition.
            let count = Update::builder()
                .table_name(&self.table)
                .key(attr::PK, s(open_pk(&current.user_id)))
                .key(attr::SK, s(OPEN_SK))
                .update_expression("SET #open = if_not_exists(#open, :one) - :one")
                .expression_attribute_names("#open", attr::OPEN)
                .expression_attribute_values(":one", n(1))
                .build()
                .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
            items.push(TransactWriteItem::builder().update(count).build());
        }
        for message in messages {
            items.push(put(&self.table, message_item(message))?);
        }
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(RepositoryError::ConcurrentUpdate),
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %id))]
    async fn start_pending_clock(
        &self,
        id: &OrderId,
        at: Timestamp,
    ) -> Result<(), RepositoryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(order_pk(id)))
            .key(attr::SK, s(ORDER_SK))
            .update_expression("SET #clock = if_not_exists(#clock, :at)")
            .condition_expression("attribute_exists(#pk) AND #status = :pending")
            .expression_attribute_names("#clock", attr::CLOCK_AT)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#status", attr::STATUS)
            .expression_attribute_values(":at", n(at.unix_millis()))
            .expression_attribute_values(":pending", s(OrderStatus::Pending.as_str()))
            .send()
            .await;
        // A failed condition: gone or no longer pending, no clock to start.
        crate::conditional("DynamoDB UpdateItem", result)?;
        Ok(())
    }
}

#[async_trait]
impl OrderExpiry for DynamoOrderRepository {
    async fn overdue(
        &self,
        status: OrderStatus,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Row<Order>>, RepositoryError> {
        // A clock never starts before its order is created: the created key bounds the query.
        let pages = try_join_all(Self::shards(status.as_str()).into_iter().map(|partition| {
            self.query_partition(PartitionQuery {
                index: Some(BY_STATUS),
                key: (attr::STATUS_KEY, partition),
                sort: (attr::CREATED_KEY, Some(millis_key(&cutoff))),
                limit,
                clock_before: Some(cutoff.unix_millis()),
                ..PartitionQuery::default()
            })
        }))
        .await?;
        let mut rows: Vec<(String, Row<Order>)> = pages
            .iter()
            .flatten()
            .map(|item| {
                let created = text(item, attr::CREATED_KEY).unwrap_or_default().to_owned();
                let key = RowKey(text(item, attr::PK).unwrap_or_default().to_owned());
                let value = order_from_item(item).map_err(Unreadable::from);
                (created, Row { key, value })
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.truncate(limit);
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    #[tracing::instrument(skip_all, fields(row = %key))]
    async fn park_order(&self, key: &RowKey, reason: &str) -> Result<(), RepositoryError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(key.0.clone()))
            .key(attr::SK, s(ORDER_SK))
            .update_expression("SET #reason = :reason, #at = :at REMOVE #statusKey")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#reason", attr::PARKED_REASON)
            .expression_attribute_names("#at", attr::PARKED_AT)
            .expression_attribute_names("#statusKey", attr::STATUS_KEY)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":at", s(Timestamp::now().to_rfc3339()))
            .send()
            .await;
        crate::conditional("DynamoDB UpdateItem", result)?;
        Ok(())
    }
}

fn message_row(item: &Item) -> Row<OutboxMessage> {
    let pk = text(item, attr::PK).unwrap_or_default();
    let sk = text(item, attr::SK).unwrap_or_default();
    Row {
        key: outbox_row_key(pk, sk),
        value: message_from_item(item).map_err(Unreadable::from),
    }
}

impl DynamoOrderRepository {
    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, RepositoryError> {
        Ok(self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(pk))
            .key(attr::SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?
            .item)
    }

    /// Moves `item` from `(from_pk, sk)` to `to` (its new key attributes replaced), in one
    /// transaction conditioned on the source still being there. `false` when it was not.
    async fn move_item(&self, from_pk: &str, sk: &str, to: Item) -> Result<bool, RepositoryError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(attr::PK, s(from_pk))
            .key(attr::SK, s(sk))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Delete", e))?;
        let items = vec![
            TransactWriteItem::builder().delete(delete).build(),
            put(&self.table, to)?,
        ];
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(true),
            Err(reasons) if crate::condition_failed(&reasons, 0) => Ok(false),
            Err(_) => Err(RepositoryError::failed(
                "DynamoDB move outbox row",
                "the transaction was cancelled",
            )),
        }
    }
}

#[async_trait]
impl Outbox for DynamoOrderRepository {
    async fn unsent(
        &self,
        cutoff: Timestamp,
        after: Option<&RowKey>,
        limit: usize,
    ) -> Result<Vec<Row<OutboxMessage>>, RepositoryError> {
        let upper = millis_key(&cutoff);
        // Every shard resumes after the cursor's sort key (`<millis>#<message id>`): rows sort
        // by it across shards.
        let lower = after
            .map(split_row_key)
            .transpose()?
            .map(|(_, sk)| sk.to_owned());
        if lower
            .as_deref()
            .is_some_and(|lower| lower >= upper.as_str())
        {
            // Nothing lies between (and `BETWEEN` refuses a lower bound above the upper).
            return Ok(Vec::new());
        }
        let pages = try_join_all((0..OrderId::SHARDS).map(|shard| {
            self.query_partition(PartitionQuery {
                key: (attr::PK, outbox_pk(shard)),
                sort: (attr::SK, Some(upper.clone())),
                lower: lower.clone(),
                limit: limit + 1,
                ..PartitionQuery::default()
            })
        }))
        .await?;
        let mut rows: Vec<(String, Row<OutboxMessage>)> = pages
            .iter()
            .flatten()
            .map(|item| {
                let sk = text(item, attr::SK).unwrap_or_default().to_owned();
                (sk, message_row(item))
            })
            // `BETWEEN` includes its lower bound: the cursor's row itself is dropped.
            .filter(|(sk, _)| lower.as_deref() != Some(sk.as_str()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.truncate(limit);
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    }

    async fn mark_sent(&self, messages: &[OutboxMessage]) -> Result<(), RepositoryError> {
        try_join_all(messages.iter().map(|message| {
            let item = message_item(message);
            let request = self
                .client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(
                    item.into_iter()
                        .filter(|(name, _)| name == attr::PK || name == attr::SK)
                        .collect(),
                ));
            async move {
                request
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| crate::sdk_error("DynamoDB DeleteItem", e))
            }
        }))
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(row = %key))]
    async fn park(&self, key: &RowKey, reason: &str) -> Result<(), RepositoryError> {
        let (pk, sk) = split_row_key(key)?;
        let Some(mut item) = self.get(pk, sk).await? else {
            return Ok(());
        };
        item.insert(attr::PK.to_owned(), s(PARKED_PK));
        item.insert(attr::PARKED_FROM.to_owned(), s(pk));
        item.insert(attr::PARKED_REASON.to_owned(), s(reason));
        item.insert(attr::PARKED_AT.to_owned(), s(Timestamp::now().to_rfc3339()));
        self.move_item(pk, sk, item).await.map(|_| ())
    }

    async fn parked(&self, limit: usize) -> Result<Vec<ParkedRow>, RepositoryError> {
        let items = self
            .query_partition(PartitionQuery {
                key: (attr::PK, PARKED_PK.to_owned()),
                limit,
                ..PartitionQuery::default()
            })
            .await?;
        Ok(items
            .iter()
            .map(|item| {
                let get = |name: &str| text(item, name).unwrap_or_default().to_owned();
                ParkedRow {
                    key: outbox_row_key(PARKED_PK, &get(attr::SK)),
                    reason: get(attr::PARKED_REASON),
                    parked_at: Timestamp::parse_rfc3339(&get(attr::PARKED_AT)).ok(),
                    body: get(attr::BODY),
                }
            })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(row = %key))]
    async fn unpark(&self, key: &RowKey) -> Result<bool, RepositoryError> {
        let (pk, sk) = split_row_key(key)?;
        if pk != PARKED_PK {
            return Ok(false);
        }
        let Some(mut item) = self.get(pk, sk).await? else {
            return Ok(false);
        };
        let Some(AttributeValue::S(from)) = item.remove(attr::PARKED_FROM) else {
            return Err(RepositoryError::Corrupt(format!(
                "parked outbox row {key} does not say where it came from"
            )));
        };
        item.remove(attr::PARKED_REASON);
        item.remove(attr::PARKED_AT);
        item.insert(attr::PK.to_owned(), s(from));
        self.move_item(pk, sk, item).await
    }
}
