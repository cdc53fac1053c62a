//! The use cases of orders and inventory, over the repository traits only: the HTTP handlers,
//! the queue workers and the relay call these, and tests can call them without either.
//!
//! - [`placement`]: placing an order.
//! - [`transitions`]: reading orders and moving them.
//! - [`inventory`]: the queue workers' steps.
//! - [`relay`]: the outbox relay, purging and expiry.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::join_all;
use zx_domain::{
    Commit, Destination, Driver, IdempotencyKey, IdempotencyRecord, InventoryRepository,
    MessageSender, Order, OrderCreation, OrderExpiry, OrderId, OrderLine, OrderPage, OrderQuery,
    OrderReader, OrderStatus, OrderStore, OrderWriter, Outbox, OutboxMessage, ProductId,
    ProductReader, Release, RepositoryError, Reservation, ReservationPurge, ReserveLine, RowKey,
    ShippingAddress, Timestamp, UserId,
};

use zx_domain::metrics as metric;
use zx_http::trace::TraceHeader;

use crate::messages::{self, InventoryCommand, InventoryOutcome, MalformedMessage, ReserveData};

mod inventory;
mod placement;
mod relay;
mod transitions;

pub use inventory::*;
pub use placement::*;
pub use relay::*;
pub use transitions::*;

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most lines one order may have (before duplicates are summed).
pub const MAX_LINES: usize = 50;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 100;
/// Orders expired, or messages relayed, per batch of the relay.
const BATCH: usize = 100;
/// Pages of overdue orders per expiry pass.
const MAX_EXPIRY_PAGES: usize = 10;
/// Orders expired at once.
const EXPIRY_CONCURRENCY: usize = 8;
/// What a relay run keeps in hand before its deadline: it starts no page later than this.
const RELAY_MARGIN: Duration = Duration::from_secs(5);

/// Views made stale by stock changes (the catalogue cache), told which products changed, and
/// what they know of products that are sold out.
#[async_trait]
pub trait StaleViews: Send + Sync {
    /// Stock of `products` was reserved; `sold_out` are left without available units.
    async fn stock_taken(&self, products: &[ProductId], sold_out: &[ProductId]);
    /// Stock of `products` came back (a release).
    async fn stock_returned(&self, products: &[ProductId]);
    /// The first of `products` known to be sold out, if any (none when unknown: fails open).
    async fn known_sold_out(&self, products: &[ProductId]) -> Option<ProductId>;
}

#[async_trait]
impl StaleViews for zx_products::CatalogueCache {
    async fn stock_taken(&self, products: &[ProductId], sold_out: &[ProductId]) {
        join_all(products.iter().map(|id| self.invalidate_product(id))).await;
        if !sold_out.is_empty() {
            self.mark_sold_out(sold_out).await;
        }
    }

    async fn stock_returned(&self, products: &[ProductId]) {
        self.clear_sold_out(products).await;
        join_all(products.iter().map(|id| self.invalidate_product(id))).await;
    }

    async fn known_sold_out(&self, products: &[ProductId]) -> Option<ProductId> {
        self.known_sold_out(products).await
    }
}

/// Timing and limits of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaSettings {
    /// Orders still pending this long after their reserve was sent are cancelled with reason
    /// `timeout`.
    pub pending_timeout: Duration,
    /// Confirmed orders not paid this long after confirmation are cancelled with reason
    /// `payment_timeout`.
    pub payment_timeout: Duration,
    /// Most open (pending or confirmed) orders one customer may hold.
    pub max_open: u32,
    /// The relay resends messages at least this old (younger ones are being sent right now).
    pub relay_delay: Duration,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            pending_timeout: Duration::from_secs(15 * 60),
            payment_timeout: Duration::from_secs(30 * 60),
            max_open: 10,
            relay_delay: Duration::from_secs(10),
        }
    }
}

/// Sending an order's messages now: the sender, the orders (a sent reserve starts its order's
/// pending clock) and the outbox (what was sent is forgotten).
#[derive(Clone)]
pub struct Dispatch {
    pub orders: Arc<dyn OrderWriter>,
    pub outbox: Arc<dyn Outbox>,
    pub sender: Arc<dyn MessageSender>,
}

/// What placing an order works with ([`place_order`]).
#[derive(Clone)]
pub struct Placement {
    pub orders: Arc<dyn OrderStore>,
    pub catalogue: Arc<dyn ProductReader>,
    pub views: Option<Arc<dyn StaleViews>>,
    pub dispatch: Dispatch,
    pub settings: SagaSettings,
}

/// What moving an order works with ([`change_status`], the order worker, expiry).
#[derive(Clone)]
pub struct Transitions {
    pub orders: Arc<dyn OrderStore>,
    pub dispatch: Dispatch,
}

/// What the inventory worker works with ([`handle_inventory_message`], [`reserve_many`]): it
/// reads the order a message names, takes or gives back stock, and answers on the order queue.
#[derive(Clone)]
pub struct InventorySteps {
    pub orders: Arc<dyn OrderReader>,
    pub inventory: Arc<dyn InventoryRepository>,
    pub sender: Arc<dyn MessageSender>,
    pub views: Option<Arc<dyn StaleViews>>,
}

/// What the relay works with ([`run_relay`]): resends, expiry (as transitions) and purges.
#[derive(Clone)]
pub struct Relay {
    pub outbox: Arc<dyn Outbox>,
    pub expiry: Arc<dyn OrderExpiry>,
    pub purge: Arc<dyn ReservationPurge>,
    pub transitions: Transitions,
    pub settings: SagaSettings,
}

/// What can go wrong in an order use case.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// Products that do not exist or are deleted.
    #[error("unknown products: {}", .0.iter().map(ProductId::as_str).collect::<Vec<_>>().join(", "))]
    UnknownProducts(Vec<ProductId>),
    /// The idempotency key was used for another request.
    #[error("the idempotency key was used for another request")]
    KeyReused,
    /// No such order, or not one the caller may see.
    #[error("no such order")]
    NotFound,
    /// The state machine has no such transition for this caller from the current status.
    #[error("an order that is {from} cannot become {to}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
    /// Another transition won the race.
    #[error("the order was changed concurrently")]
    Conflict,
    /// The total does not fit.
    #[error("the order total is too large")]
    TotalTooLarge,
    /// The customer holds the most open orders allowed.
    #[error("the customer already holds {0} open orders")]
    TooManyOpen(u32),
    /// The cache knows this product is sold out: no order was stored.
    #[error("product {0} is sold out")]
    SoldOut(ProductId),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Who acts on an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub driver: Driver,
    /// Absent for the system.
    pub user_id: Option<UserId>,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            driver: Driver::System,
            user_id: None,
        }
    }

    /// A customer acting on its own orders.
    pub fn customer(user_id: UserId) -> Self {
        Self {
            driver: Driver::Customer,
            user_id: Some(user_id),
        }
    }

    /// An admin acting on anyone's orders.
    pub fn admin(user_id: UserId) -> Self {
        Self {
            driver: Driver::Admin,
            user_id: Some(user_id),
        }
    }

    /// How the actor is written in the status history.
    pub fn label(&self) -> String {
        match &self.user_id {
            Some(id) => format!("user:{id}"),
            None => "system".into(),
        }
    }

    /// Whether this actor may see `order`.
    pub fn may_see(&self, order: &Order) -> bool {
        match self.driver {
            Driver::Admin | Driver::System => true,
            Driver::Customer => self.user_id.as_ref() == Some(&order.user_id),
        }
    }
}

/// Sends `messages` now (those this function may send) and forgets the ones sent; what fails
/// or is not this function's to send stays in the outbox for the relay (logged, never an
/// error: the order is already safe).
pub async fn dispatch(dispatch: &Dispatch, messages: &[OutboxMessage]) {
    let mine: Vec<OutboxMessage> = messages
        .iter()
        .filter(|m| dispatch.sender.sends_to(m.destination))
        .cloned()
        .collect();
    if mine.is_empty() {
        return;
    }
    let results = dispatch.sender.send_batch(&mine).await;
    let mut sent = Vec::with_capacity(mine.len());
    for (message, result) in mine.into_iter().zip(results) {
        match result {
            Ok(()) => sent.push(message),
            Err(error) => tracing::warn!(
                message_id = %message.id,
                destination = message.destination.as_str(),
                error = %zx_domain::cause_chain(&error),
                "message not sent; the outbox relay will resend it"
            ),
        }
    }
    forget_sent(dispatch, sent).await;
}

/// Starts the pending clock of the orders whose reserve was just sent, then forgets the sent
/// messages. A reserve whose clock could not be started stays in the outbox: the relay sends it
/// again (the inventory takes stock once) and starts the clock then.
/// Whether an outbox message is an order's `inventory.reserve`.
fn is_reserve(message: &OutboxMessage) -> bool {
    message.destination == Destination::InventoryQueue
        && messages::kind_of(&message.body).as_deref() == Some(messages::RESERVE)
}

async fn forget_sent(dispatch: &Dispatch, sent: Vec<OutboxMessage>) -> usize {
    if sent.is_empty() {
        return 0;
    }
    let now = Timestamp::now();
    let clocks = join_all(sent.iter().map(|message| async move {
        if is_reserve(message) {
            dispatch
                .orders
                .start_pending_clock(&message.order_id, now)
                .await
        } else {
            Ok(())
        }
    }))
    .await;
    let mut forget = Vec::with_capacity(sent.len());
    for (message, clock) in sent.into_iter().zip(clocks) {
        match clock {
            Ok(()) => forget.push(message),
            Err(error) => tracing::warn!(
                order_id = %message.order_id,
                error = %zx_domain::cause_chain(&error),
                "reserve sent but its pending clock not started; the relay will send it again"
            ),
        }
    }
    if let Err(error) = dispatch.outbox.mark_sent(&forget).await {
        // Sent but not forgotten: sent again later (consumers are idempotent).
        tracing::warn!(error = %zx_domain::cause_chain(&error), "sent messages not marked; the relay may send them again");
    }
    forget.len()
}
