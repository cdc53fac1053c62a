//! Orders: lines priced from the catalogue, the seed's status machine with a history of every
//! change, idempotency keys, the messages of the saga (SPEC §3) and the outbox that carries them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{ProductId, Timestamp, UserId};

/// An order's opaque identifier: a UUIDv7 in canonical lower-case form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId(String);

impl OrderId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        uuid::Uuid::try_parse(text.trim())
            .map(|id| Self(id.hyphenated().to_string()))
            .map_err(|_| "must be an order id (UUID)".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// One of [`OrderId::SHARDS`] buckets, from the random tail of the id: spreads the shop's
    /// orders over that many index partitions.
    pub fn shard(&self) -> u8 {
        let last = self.0.bytes().last().unwrap_or(b'0');
        let value = match last {
            b'0'..=b'9' => last - b'0',
            b'a'..=b'f' => last - b'a' + 10,
            _ => 0,
        };
        value % Self::SHARDS
    }

    /// How many index partitions the shop's orders are spread over.
    pub const SHARDS: u8 = 16;
}

impl TryFrom<String> for OrderId {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        Self::parse(&value)
    }
}

impl From<OrderId> for String {
    fn from(id: OrderId) -> String {
        id.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The seed's order statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Paid,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
}

/// Who drives a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The saga (workers, the relay's expiry).
    System,
    /// The order's owner.
    Customer,
    /// An admin.
    Admin,
}

impl OrderStatus {
    pub const ALL: [Self; 7] = [
        Self::Pending,
        Self::Confirmed,
        Self::Paid,
        Self::Shipped,
        Self::Delivered,
        Self::Cancelled,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Paid => "paid",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                "must be one of pending, confirmed, paid, shipped, delivered, cancelled, refunded"
                    .to_owned()
            })
    }

    /// Whether the state machine (SPEC §2) has an edge `self → to`, whoever drives it.
    pub fn can_become(self, to: Self) -> bool {
        use OrderStatus::*;
        matches!(
            (self, to),
            (Pending, Confirmed)
                | (Pending, Cancelled)
                | (Confirmed, Paid)
                | (Confirmed, Cancelled)
                | (Paid, Shipped)
                | (Shipped, Delivered)
                | (Paid, Refunded)
                | (Delivered, Refunded)
        )
    }

    /// Whether `driver` may take the edge `self → to`: `pending → confirmed` is the system's
    /// alone; customers cancel `pending`/`confirmed` orders; admins drive everything else (and
    /// may cancel); the system cancels pending orders (rejected stock, timeout) and confirmed
    /// orders not paid in time (payment deadline).
    pub fn allowed(self, to: Self, driver: Driver) -> bool {
        use OrderStatus::*;
        if !self.can_become(to) {
            return false;
        }
        match (driver, self, to) {
            (Driver::System, Pending, Confirmed | Cancelled) => true,
            // The payment deadline (reason `payment_timeout`).
            (Driver::System, Confirmed, Cancelled) => true,
            (Driver::System, _, _) => false,
            (_, Pending, Confirmed) => false,
            (Driver::Customer, Pending | Confirmed, Cancelled) => true,
            (Driver::Customer, _, _) => false,
            (Driver::Admin, _, _) => true,
        }
    }

    /// Whether an order in this status is open: it holds (or is about to hold) stock and
    /// counts against the customer's cap on open orders.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Confirmed)
    }

    /// Whether entering `to` from `self` takes the reserved units out of stock for good (they
    /// ship).
    pub fn commits_stock(self, to: Self) -> bool {
        matches!((self, to), (Self::Paid, Self::Shipped))
    }

    /// Whether entering `to` from `self` gives reserved stock back (a cancellation before
    /// shipping, a refund before delivery). `delivered → refunded` does not restock.
    pub fn releases_stock(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::Pending | Self::Confirmed, Self::Cancelled) | (Self::Paid, Self::Refunded)
        )
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an order: a product, its name and unit price when ordered, and the quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub product_id: ProductId,
    pub name: String,
    /// Minor units, from the catalogue at the time of the order.
    pub unit_price: i64,
    pub quantity: u32,
}

impl OrderLine {
    /// `unit_price × quantity`, or `None` on overflow.
    pub fn line_total(&self) -> Option<i64> {
        self.unit_price.checked_mul(i64::from(self.quantity))
    }
}

/// One entry of an order's status history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusChange {
    /// `None` for the creation entry.
    pub from: Option<OrderStatus>,
    pub to: OrderStatus,
    pub at: Timestamp,
    /// `user:<id>` or `system`.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A shipping address as the customer wrote it (1–500 characters, no control characters).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShippingAddress(String);

impl ShippingAddress {
    pub const MAX_CHARS: usize = 500;

    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let chars = text.chars().count();
        if chars == 0 || chars > Self::MAX_CHARS {
            return Err(format!("must be 1 to {} characters", Self::MAX_CHARS));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err("must not contain control characters".into());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    /// Minor units: the sum of the line totals.
    pub total: i64,
    pub shipping_address: Option<ShippingAddress>,
    pub history: Vec<StatusChange>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// 1 when created, +1 on every transition.
    pub version: u64,
}

impl Order {
    /// A new pending order of `user` placed at `at` (version 1, its history the placement), or
    /// `None` when its total does not fit.
    pub fn pending(
        id: OrderId,
        user: &UserId,
        lines: Vec<OrderLine>,
        shipping_address: Option<ShippingAddress>,
        at: Timestamp,
    ) -> Option<Self> {
        let total = lines
            .iter()
            .try_fold(0i64, |sum, line| sum.checked_add(line.line_total()?))?;
        Some(Self {
            id,
            user_id: user.clone(),
            status: OrderStatus::Pending,
            lines,
            total,
            shipping_address,
            history: vec![StatusChange {
                from: None,
                to: OrderStatus::Pending,
                at,
                actor: format!("user:{user}"),
                reason: None,
            }],
            created_at: at,
            updated_at: at,
            version: 1,
        })
    }

    /// The order after the transition `self.status → to` at `at` by `actor`, or `None` when
    /// the machine has no such edge.
    pub fn transitioned(
        &self,
        to: OrderStatus,
        actor: &str,
        reason: Option<&str>,
        at: Timestamp,
    ) -> Option<Self> {
        if !self.status.can_become(to) {
            return None;
        }
        let mut next = self.clone();
        next.history.push(StatusChange {
            from: Some(self.status),
            to,
            at,
            actor: actor.to_owned(),
            reason: reason.map(str::to_owned),
        });
        next.status = to;
        next.updated_at = at;
        next.version = self.version + 1;
        Some(next)
    }
}

/// A client's `Idempotency-Key`: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(text: &str) -> Result<Self, String> {
        if (1..=255).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be 1 to 255 visible ASCII characters".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What an idempotency key was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub user_id: UserId,
    pub key: IdempotencyKey,
    /// A digest of the normalised request: a replay must carry the same one.
    pub fingerprint: String,
    pub order_id: OrderId,
    /// After this the key is forgotten (24 h after first use).
    pub expires_at: Timestamp,
}

/// Where an outgoing message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// The inventory queue (`inventory-worker`).
    InventoryQueue,
    /// The order queue (`order-worker`).
    OrderQueue,
    /// The `order-events` topic (downstream consumers).
    OrderEvents,
}

impl Destination {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InventoryQueue => "inventory",
            Self::OrderQueue => "orders",
            Self::OrderEvents => "order-events",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "inventory" => Ok(Self::InventoryQueue),
            "orders" => Ok(Self::OrderQueue),
            "order-events" => Ok(Self::OrderEvents),
            other => Err(format!("unknown destination {other:?}")),
        }
    }
}

/// A message with its envelope serialised, ready to send; the unit of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// The envelope's `id` (consumers may de-duplicate on it).
    pub id: String,
    pub destination: Destination,
    /// The envelope, JSON.
    pub body: String,
    /// The order it belongs to.
    pub order_id: OrderId,
    pub created_at: Timestamp,
    /// The X-Ray trace header of the request or message that wrote it (sent as the SQS
    /// message's `AWSTraceHeader`, so its consumer joins the same trace).
    pub trace: Option<String>,
}

/// Where a stored row is, as its store names it (opaque to everything but the adapter that
/// returned it): what a row that cannot be read is parked by, and where paging resumes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey(pub String);

impl fmt::Display for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A stored row and what it holds, or why it cannot be read: one bad row never makes a whole
/// page unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<T> {
    pub key: RowKey,
    pub value: Result<T, Unreadable>,
}

/// Why a stored row cannot be read (what is wrong with it, as its adapter found it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl From<crate::RepositoryError> for Unreadable {
    fn from(error: crate::RepositoryError) -> Self {
        Self(error.to_string())
    }
}

/// An outbox row set aside: it could not be read, or its destination refused it for good.
/// Kept (never sent, never blocking the rows behind it) until an operator resends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRow {
    pub key: RowKey,
    pub reason: String,
    pub parked_at: Option<Timestamp>,
    /// The stored body, as stored (it may be what could not be read).
    pub body: String,
}

/// The message envelope of SPEC §3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Envelope<T> {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: u32,
    pub occurred_at: Timestamp,
    pub data: T,
}

/// A product and a quantity to reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReserveLine {
    pub product_id: ProductId,
    pub quantity: u32,
}

/// What an order holds of the inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// The stock is held for the order.
    Held,
    /// Given back (or never taken: a release that came before its reserve).
    Released,
    /// Shipped: the units left the warehouse (taken out of `reserved` for good).
    Committed,
}

impl ReservationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Released => "released",
            Self::Committed => "committed",
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "held" => Ok(Self::Held),
            "released" => Ok(Self::Released),
            "committed" => Ok(Self::Committed),
            other => Err(format!("unknown reservation state {other:?}")),
        }
    }
}

/// The outcome of reserving an order's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Every line is held (now, or by an earlier delivery of the same message).
    Held,
    /// Nothing was taken: this product cannot be reserved (`reason`: `out_of_stock` or
    /// `unavailable` for an unknown or deleted product).
    Rejected {
        product_id: ProductId,
        reason: &'static str,
    },
    /// The order's stock was released before this reserve arrived: nothing is taken.
    AlreadyReleased,
}

/// The outcome of releasing an order's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// The held stock of these products went back to `available` now.
    Restored(Vec<ProductId>),
    /// Nothing to do: released before (a redelivery), shipped (no restock), or nothing was
    /// ever held (a tombstone is left, so a reserve arriving later takes nothing).
    Nothing,
}

/// The outcome of committing an order's stock when it ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// The held units of these products left `reserved` now.
    Committed(Vec<ProductId>),
    /// Nothing held: committed before (a redelivery), released, or never reserved.
    Nothing,
}

/// The newest-first listing position of an order: `(created_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCursor {
    pub created_at: Timestamp,
    pub id: OrderId,
}

impl OrderCursor {
    pub fn after(order: &Order) -> Self {
        Self {
            created_at: order.created_at,
            id: order.id.clone(),
        }
    }

    /// Opaque text: `<millis>.<id>`, hex-free of anything but ASCII.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.unix_millis(), self.id)
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        let invalid = || "is not a cursor this API returned".to_owned();
        let (millis, id) = text.split_once('.').ok_or_else(invalid)?;
        let millis: i64 = millis.parse().map_err(|_| invalid())?;
        Ok(Self {
            created_at: Timestamp::from_unix_millis(millis).ok_or_else(invalid)?,
            id: OrderId::parse(id).map_err(|_| invalid())?,
        })
    }
}

/// A listing of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQuery {
    /// Only this customer's orders.
    pub user_id: Option<UserId>,
    pub status: Option<OrderStatus>,
    pub limit: crate::PageLimit,
    pub after: Option<OrderCursor>,
}

/// One page of orders and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub next: Option<OrderCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_order_totals_its_lines_and_refuses_a_total_that_does_not_fit() {
        let line = |unit_price: i64, quantity: u32| OrderLine {
            product_id: ProductId::generate(),
            name: "thing".into(),
            unit_price,
            quantity,
        };
        let user = UserId::generate();
        let at = Timestamp::now();
        let order = Order::pending(
            OrderId::generate(),
            &user,
            vec![line(250, 2), line(1, 3)],
            None,
            at,
        )
        .unwrap();
        assert_eq!(
            (order.total, order.status, order.version),
            (503, OrderStatus::Pending, 1)
        );
        assert_eq!(order.history.len(), 1);
        assert_eq!(order.history[0].actor, format!("user:{user}"));
        assert_eq!((order.created_at, order.updated_at), (at, at));
        // (MAX / 2) * 2 = MAX - 1 fits; two more do not.
        let huge = vec![line(i64::MAX / 2, 2), line(2, 1)];
        assert_eq!(
            Order::pending(OrderId::generate(), &user, huge, None, at),
            None
        );
    }

    #[test]
    fn the_machine_has_exactly_the_spec_edges() {
        use OrderStatus::*;
        let edges: Vec<_> = OrderStatus::ALL
            .iter()
            .flat_map(|a| OrderStatus::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(edges.len(), 8);
        assert!(Pending.can_become(Confirmed) && !Confirmed.can_become(Pending));
        assert!(!Shipped.can_become(Cancelled) && !Cancelled.can_become(Pending));
        assert!(Pending.allowed(Cancelled, Driver::Customer));
        assert!(Confirmed.allowed(Cancelled, Driver::Customer));
        assert!(!Confirmed.allowed(Paid, Driver::Customer));
        assert!(!Pending.allowed(Confirmed, Driver::Admin));
        assert!(Confirmed.allowed(Paid, Driver::Admin));
        assert!(!Paid.allowed(Shipped, Driver::System));
        assert!(Confirmed.allowed(Cancelled, Driver::System));
        assert!(!Confirmed.allowed(Paid, Driver::System));
        assert!(Pending.is_open() && Confirmed.is_open() && !Paid.is_open());
        assert!(Paid.releases_stock(Refunded) && !Delivered.releases_stock(Refunded));
        assert!(Paid.commits_stock(Shipped) && !Shipped.commits_stock(Delivered));
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = OrderCursor {
            created_at: Timestamp::now(),
            id: OrderId::generate(),
        };
        assert_eq!(OrderCursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in ["", ".", "1.", "x.y", "99999999999999999999.a", "é.é"] {
            assert!(OrderCursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_are_in_range() {
        for _ in 0..100 {
            assert!(OrderId::generate().shard() < OrderId::SHARDS);
        }
    }
}
