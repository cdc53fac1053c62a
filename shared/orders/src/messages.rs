//! The saga's messages (SPEC §3): envelopes `{id, type, version, occurredAt, data}` built for
//! the outbox, and parsed strictly from queues (anything else is a malformed message).

use serde::{Deserialize, Serialize};
use zx_domain::{
    Destination, Envelope, Order, OrderId, OrderStatus, OutboxMessage, ProductId, ReserveLine,
    Timestamp,
};

pub const RESERVE: &str = "inventory.reserve";
pub const RELEASE: &str = "inventory.release";
pub const COMMIT: &str = "inventory.commit";
pub const RESERVED: &str = "inventory.reserved";
pub const REJECTED: &str = "inventory.rejected";
pub const ORDER_CREATED: &str = "order.created";
pub const ORDER_STATUS_CHANGED: &str = "order.status_changed";

/// The version of every message body this code writes.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveData {
    pub order_id: OrderId,
    pub items: Vec<ReserveLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderRef {
    pub order_id: OrderId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RejectedData {
    pub order_id: OrderId,
    pub product_id: ProductId,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedData<'a> {
    order_id: &'a OrderId,
    /// The order's version: 1 at creation, +1 on every transition. Consumers order an order's
    /// events by it (delivery order is not guaranteed).
    sequence: u64,
    user_id: &'a str,
    items: &'a [zx_domain::OrderLine],
    total_amount: i64,
    created_at: Timestamp,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusChangedData<'a> {
    order_id: &'a OrderId,
    sequence: u64,
    user_id: &'a str,
    from: OrderStatus,
    to: OrderStatus,
    actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    at: Timestamp,
}

/// A message for the inventory worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryCommand {
    Reserve(ReserveData),
    Release(OrderRef),
    /// The order shipped: its reserved units leave stock for good.
    Commit(OrderRef),
}

/// A message for the order worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InventoryOutcome {
    Reserved(OrderRef),
    Rejected(RejectedData),
}

/// Why a message cannot be handled, whatever is retried.
#[derive(Debug, thiserror::Error)]
pub enum MalformedMessage {
    #[error("not a message envelope: {0}")]
    Envelope(serde_json::Error),
    #[error("unsupported message {kind} version {version}")]
    Unsupported { kind: String, version: u32 },
    #[error("invalid {kind} data: {source}")]
    Data {
        kind: String,
        #[source]
        source: serde_json::Error,
    },
}

fn envelope(body: &str) -> Result<Envelope<serde_json::Value>, MalformedMessage> {
    serde_json::from_str(body).map_err(MalformedMessage::Envelope)
}

fn data<T: serde::de::DeserializeOwned>(
    envelope: Envelope<serde_json::Value>,
) -> Result<T, MalformedMessage> {
    serde_json::from_value(envelope.data).map_err(|source| MalformedMessage::Data {
        kind: envelope.kind,
        source,
    })
}

fn unsupported(envelope: &Envelope<serde_json::Value>) -> MalformedMessage {
    MalformedMessage::Unsupported {
        kind: envelope.kind.clone(),
        version: envelope.version,
    }
}

/// The envelope's `type` of a stored message body, if it has one.
pub fn kind_of(body: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    serde_json::from_str::<Kind>(body).ok().map(|k| k.kind)
}

impl InventoryCommand {
    pub fn parse(body: &str) -> Result<Self, MalformedMessage> {
        let envelope = envelope(body)?;
        match (envelope.kind.as_str(), envelope.version) {
            (RESERVE, VERSION) => data(envelope).map(Self::Reserve),
            (RELEASE, VERSION) => data(envelope).map(Self::Release),
            (COMMIT, VERSION) => data(envelope).map(Self::Commit),
            _ => Err(unsupported(&envelope)),
        }
    }
}

impl InventoryOutcome {
    pub fn parse(body: &str) -> Result<Self, MalformedMessage> {
        let envelope = envelope(body)?;
        match (envelope.kind.as_str(), envelope.version) {
            (RESERVED, VERSION) => data(envelope).map(Self::Reserved),
            (REJECTED, VERSION) => data(envelope).map(Self::Rejected),
            _ => Err(unsupported(&envelope)),
        }
    }
}

/// A message of `kind` with `data` for `destination`, stamped now with a fresh id, in the
/// current trace (the request's or the message's being handled).
pub fn message<T: Serialize>(
    destination: Destination,
    kind: &str,
    order_id: &OrderId,
    data: T,
) -> OutboxMessage {
    let id = uuid::Uuid::now_v7().hyphenated().to_string();
    let created_at = Timestamp::now();
    let envelope = Envelope {
        id: id.clone(),
        kind: kind.to_owned(),
        version: VERSION,
        occurred_at: created_at,
        data,
    };
    OutboxMessage {
        id,
        destination,
        // Serialising plain structs of strings and numbers cannot fail.
        body: serde_json::to_string(&envelope).unwrap_or_default(),
        order_id: order_id.clone(),
        created_at,
        trace: zx_http::trace::current().map(|trace| trace.as_str().to_owned()),
    }
}

/// `inventory.reserve` for a new order: its lines, one per product (lines are summed when the
/// order is placed).
pub fn reserve(order: &Order) -> OutboxMessage {
    let items = order
        .lines
        .iter()
        .map(|line| ReserveLine {
            product_id: line.product_id.clone(),
            quantity: line.quantity,
        })
        .collect();
    message(
        Destination::InventoryQueue,
        RESERVE,
        &order.id,
        ReserveData {
            order_id: order.id.clone(),
            items,
        },
    )
}

pub fn release(order_id: &OrderId) -> OutboxMessage {
    message(
        Destination::InventoryQueue,
        RELEASE,
        order_id,
        OrderRef {
            order_id: order_id.clone(),
        },
    )
}

pub fn commit(order_id: &OrderId) -> OutboxMessage {
    message(
        Destination::InventoryQueue,
        COMMIT,
        order_id,
        OrderRef {
            order_id: order_id.clone(),
        },
    )
}

pub fn reserved(order_id: &OrderId) -> OutboxMessage {
    message(
        Destination::OrderQueue,
        RESERVED,
        order_id,
        OrderRef {
            order_id: order_id.clone(),
        },
    )
}

pub fn rejected(order_id: &OrderId, product_id: &ProductId, reason: &str) -> OutboxMessage {
    message(
        Destination::OrderQueue,
        REJECTED,
        order_id,
        RejectedData {
            order_id: order_id.clone(),
            product_id: product_id.clone(),
            reason: reason.to_owned(),
        },
    )
}

pub fn order_created(order: &Order) -> OutboxMessage {
    message(
        Destination::OrderEvents,
        ORDER_CREATED,
        &order.id,
        CreatedData {
            order_id: &order.id,
            sequence: order.version,
            user_id: order.user_id.as_str(),
            items: &order.lines,
            total_amount: order.total,
            created_at: order.created_at,
        },
    )
}

/// `order.status_changed` for the last transition of `next` (from `previous`).
pub fn status_changed(previous: OrderStatus, next: &Order) -> OutboxMessage {
    let last = next.history.last();
    message(
        Destination::OrderEvents,
        ORDER_STATUS_CHANGED,
        &next.id,
        StatusChangedData {
            order_id: &next.id,
            sequence: next.version,
            user_id: next.user_id.as_str(),
            from: previous,
            to: next.status,
            actor: last.map_or("system", |c| c.actor.as_str()),
            reason: last.and_then(|c| c.reason.as_deref()),
            at: next.updated_at,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_malformed() {
        let id = OrderId::generate();
        let body = release(&id).body;
        assert_eq!(
            InventoryCommand::parse(&body).unwrap(),
            InventoryCommand::Release(OrderRef {
                order_id: id.clone()
            })
        );
        let reserved_body = reserved(&id).body;
        assert!(InventoryCommand::parse(&reserved_body).is_err());
        assert!(InventoryOutcome::parse(&reserved_body).is_ok());
        assert_eq!(kind_of(&reserved_body).as_deref(), Some(RESERVED));
        assert_eq!(kind_of("{"), None);
        for bad in [
            "",
            "{}",
            "null",
            r#"{"id":"1","type":"inventory.release","version":2,"occurredAt":"2026-01-01T00:00:00Z","data":{}}"#,
            r#"{"id":"1","type":"inventory.release","version":1,"occurredAt":"2026-01-01T00:00:00Z","data":{"orderId":"x"}}"#,
        ] {
            assert!(InventoryCommand::parse(bad).is_err(), "{bad}");
        }
    }
}
