//! The use cases of orders and inventory, over the repository traits only: the HTTP handlers,
//! the queue workers and the relay call these, and tests can call them without either.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use zx_domain::{
    Commit, Driver, IdempotencyKey, IdempotencyRecord, InventoryRepository, MessageSender, Order,
    OrderCreation, OrderId, OrderLine, OrderPage, OrderQuery, OrderRepository, OrderStatus, Outbox,
    OutboxMessage, ProductId, ProductReader, Release, RepositoryError, Reservation, ReserveLine,
    ShippingAddress, StatusChange, Timestamp, UserId,
};

use crate::messages::{self, InventoryCommand, InventoryOutcome, MalformedMessage};

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most lines one order may have (before duplicates are summed).
pub const MAX_LINES: usize = 50;
/// Most units of one line.
pub const MAX_QUANTITY: u32 = 100;
/// Orders expired, or messages relayed, per batch of the relay.
const BATCH: usize = 100;
/// Batches per relay run (a run stays well inside its Lambda timeout).
const MAX_BATCHES: usize = 10;

/// Views made stale by stock changes (the catalogue cache), told which products changed.
#[async_trait]
pub trait StaleViews: Send + Sync {
    async fn stock_changed(&self, products: &[ProductId]);
}

#[async_trait]
impl StaleViews for zx_products::CatalogueCache {
    async fn stock_changed(&self, products: &[ProductId]) {
        join_all(products.iter().map(|id| self.invalidate_product(id))).await;
    }
}

/// Timing of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SagaSettings {
    /// Orders still pending after this are cancelled with reason `timeout`.
    pub pending_timeout: Duration,
    /// The relay resends messages at least this old (younger ones are being sent right now).
    pub relay_delay: Duration,
}

impl Default for SagaSettings {
    fn default() -> Self {
        Self {
            pending_timeout: Duration::from_secs(15 * 60),
            relay_delay: Duration::from_secs(10),
        }
    }
}

/// Everything the saga's use cases work with.
#[derive(Clone)]
pub struct Saga {
    pub orders: Arc<dyn OrderRepository>,
    pub outbox: Arc<dyn Outbox>,
    pub catalogue: Arc<dyn ProductReader>,
    pub inventory: Arc<dyn InventoryRepository>,
    pub sender: Arc<dyn MessageSender>,
    pub views: Option<Arc<dyn StaleViews>>,
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

    pub fn user(user_id: UserId, admin: bool) -> Self {
        Self {
            driver: if admin {
                Driver::Admin
            } else {
                Driver::Customer
            },
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

/// A new order as the customer asked for it (lines already validated for shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub lines: Vec<(ProductId, u32)>,
    pub shipping_address: Option<ShippingAddress>,
}

impl OrderRequest {
    /// One line per product, quantities summed, in product id order.
    pub fn normalised(&self) -> Vec<(ProductId, u32)> {
        let mut summed: BTreeMap<&ProductId, u32> = BTreeMap::new();
        for (id, quantity) in &self.lines {
            let entry = summed.entry(id).or_default();
            *entry = entry.saturating_add(*quantity);
        }
        summed.into_iter().map(|(id, q)| (id.clone(), q)).collect()
    }

    /// A digest of the normalised request: two requests with the same digest ask for the
    /// same order (the same products and quantities, in any order or split, and address).
    pub fn fingerprint(&self) -> String {
        let mut canonical = String::new();
        for (id, quantity) in self.normalised() {
            canonical.push_str(&format!("{id}={quantity};"));
        }
        canonical.push('|');
        if let Some(address) = &self.shipping_address {
            canonical.push_str(address.as_str());
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A placed order, and whether it was placed by an earlier request with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
}

/// Sends `messages` now and forgets the ones sent; what fails stays in the outbox for the
/// relay (logged, never an error: the order is already safe).
pub async fn dispatch(saga: &Saga, messages: &[OutboxMessage]) {
    let results = join_all(messages.iter().map(|m| saga.sender.send(m))).await;
    let mut sent = Vec::with_capacity(messages.len());
    for (message, result) in messages.iter().zip(results) {
        match result {
            Ok(()) => sent.push(message.clone()),
            Err(error) => tracing::warn!(
                message_id = %message.id,
                destination = message.destination.as_str(),
                error = %zx_domain::cause_chain(&error),
                "message not sent; the outbox relay will resend it"
            ),
        }
    }
    if !sent.is_empty()
        && let Err(error) = saga.outbox.mark_sent(&sent).await
    {
        tracing::warn!(error = %zx_domain::cause_chain(&error), "sent messages not marked; the relay may send them again");
    }
}

async fn replay(
    saga: &Saga,
    record: &IdempotencyRecord,
    fingerprint: &str,
) -> Result<Placed, OrderError> {
    if record.fingerprint != fingerprint {
        return Err(OrderError::KeyReused);
    }
    let order = saga
        .orders
        .find_order(&record.order_id)
        .await?
        .ok_or_else(|| RepositoryError::Corrupt("idempotency record names no order".into()))?;
    Ok(Placed {
        order,
        replayed: true,
    })
}

/// Places an order for `user`: prices and total from the catalogue, stored with its
/// idempotency record and its messages in one atomic write, then the messages are sent. The
/// same key with the same request gives the same order; with another request,
/// [`OrderError::KeyReused`].
#[tracing::instrument(skip_all, fields(user_id = %user))]
pub async fn place_order(
    saga: &Saga,
    user: &UserId,
    key: IdempotencyKey,
    request: &OrderRequest,
) -> Result<Placed, OrderError> {
    let fingerprint = request.fingerprint();
    if let Some(record) = saga.orders.find_idempotency(user, &key).await? {
        return replay(saga, &record, &fingerprint).await;
    }
    let wanted = request.normalised();
    let ids: Vec<ProductId> = wanted.iter().map(|(id, _)| id.clone()).collect();
    let found = saga.catalogue.find_products(&ids).await?;
    let mut lines = Vec::with_capacity(wanted.len());
    let mut unknown = Vec::new();
    for (id, quantity) in &wanted {
        match found.iter().find(|p| &p.id == id && p.deleted_at.is_none()) {
            Some(product) => lines.push(OrderLine {
                product_id: id.clone(),
                name: product.name.as_str().to_owned(),
                unit_price: product.price.minor(),
                quantity: *quantity,
            }),
            None => unknown.push(id.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(OrderError::UnknownProducts(unknown));
    }
    let total = lines
        .iter()
        .try_fold(0i64, |sum, line| sum.checked_add(line.line_total()?))
        .ok_or(OrderError::TotalTooLarge)?;
    let now = Timestamp::now();
    let order = Order {
        id: OrderId::generate(),
        user_id: user.clone(),
        status: OrderStatus::Pending,
        lines,
        total,
        shipping_address: request.shipping_address.clone(),
        history: vec![StatusChange {
            from: None,
            to: OrderStatus::Pending,
            at: now,
            actor: format!("user:{user}"),
            reason: None,
        }],
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let record = IdempotencyRecord {
        user_id: user.clone(),
        key,
        fingerprint: fingerprint.clone(),
        order_id: order.id.clone(),
        expires_at: Timestamp::from_unix_millis(
            now.unix_millis()
                + i64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(24 * 3600 * 1000),
        )
        .unwrap_or(now),
    };
    let outgoing = [messages::reserve(&order), messages::order_created(&order)];
    match saga.orders.create_order(&order, &record, &outgoing).await? {
        OrderCreation::Created => {}
        OrderCreation::KeyTaken(existing) => return replay(saga, &existing, &fingerprint).await,
    }
    tracing::info!(order_id = %order.id, total = order.total, lines = order.lines.len(), "order placed");
    dispatch(saga, &outgoing).await;
    Ok(Placed {
        order,
        replayed: false,
    })
}

/// The order `id` if `actor` may see it (others' orders are [`OrderError::NotFound`]).
/// Reads only: the functions that serve it are granted reads only.
pub async fn get_order(
    orders: &dyn OrderRepository,
    actor: &Actor,
    id: &OrderId,
) -> Result<Order, OrderError> {
    orders
        .find_order(id)
        .await?
        .filter(|order| actor.may_see(order))
        .ok_or(OrderError::NotFound)
}

/// A page of orders: customers see only their own, whatever they ask for.
pub async fn list_orders(
    orders: &dyn OrderRepository,
    actor: &Actor,
    mut query: OrderQuery,
) -> Result<OrderPage, OrderError> {
    if actor.driver == Driver::Customer {
        query.user_id = actor.user_id.clone();
    }
    Ok(orders.list_orders(&query).await?)
}

/// Moves order `id` to `to` for `actor`: a conditional write on the current status and
/// version, with the status history entry, the `order.status_changed` event and (when the
/// transition gives stock back) an `inventory.release`, all in one atomic write. Of two racing
/// transitions exactly one wins; the other is [`OrderError::Conflict`].
#[tracing::instrument(skip_all, fields(order_id = %id, to = %to))]
pub async fn change_status(
    saga: &Saga,
    actor: &Actor,
    id: &OrderId,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<Order, OrderError> {
    let order = get_order(&*saga.orders, actor, id).await?;
    let next = transition(saga, actor, &order, to, reason).await?;
    Ok(next)
}

async fn transition(
    saga: &Saga,
    actor: &Actor,
    order: &Order,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<Order, OrderError> {
    let invalid = || OrderError::InvalidTransition {
        from: order.status,
        to,
    };
    if !order.status.allowed(to, actor.driver) {
        return Err(invalid());
    }
    let next = order
        .transitioned(to, &actor.label(), reason, Timestamp::now())
        .ok_or_else(invalid)?;
    let mut outgoing = vec![messages::status_changed(order.status, &next)];
    if order.status.releases_stock(to) {
        outgoing.push(messages::release(&order.id));
    }
    if order.status.commits_stock(to) {
        outgoing.push(messages::commit(&order.id));
    }
    match saga.orders.update_order(order, &next, &outgoing).await {
        Ok(()) => {}
        Err(RepositoryError::ConcurrentUpdate) => return Err(OrderError::Conflict),
        Err(other) => return Err(other.into()),
    }
    tracing::info!(order_id = %order.id, from = %order.status, to = %to, actor = %actor.label(), "order status changed");
    dispatch(saga, &outgoing).await;
    Ok(next)
}

/// A system transition of a pending order (confirm, or cancel with `reason`): re-read and
/// decided again when it loses a race. Returns the status the order has afterwards.
async fn settle_pending(
    saga: &Saga,
    id: &OrderId,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<OrderStatus, OrderError> {
    let system = Actor::system();
    for _ in 0..3 {
        let order = get_order(&*saga.orders, &system, id).await?;
        if order.status != OrderStatus::Pending {
            return Ok(order.status);
        }
        match transition(saga, &system, &order, to, reason).await {
            Ok(next) => return Ok(next.status),
            Err(OrderError::Conflict) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(OrderError::Conflict)
}

/// Why a queue message failed: reported back so the queue redelivers it (and, after its
/// retries, moves it to the dead-letter queue).
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Malformed(#[from] MalformedMessage),
    #[error(transparent)]
    Order(#[from] OrderError),
    #[error(transparent)]
    Repository(#[from] RepositoryError),
}

/// Sends `message` now (a worker's reply): failing fails the message, so it is redelivered and
/// the idempotent step before it answers the same again.
async fn reply(saga: &Saga, message: OutboxMessage) -> Result<(), MessageError> {
    Ok(saga.sender.send(&message).await?)
}

async fn stock_changed(saga: &Saga, products: &[ProductId]) {
    if let Some(views) = &saga.views {
        views.stock_changed(products).await;
    }
}

/// The inventory worker's step: reserve (all or nothing) or release an order's stock, then
/// tell the order worker. Redeliveries change stock once.
#[tracing::instrument(skip_all)]
pub async fn handle_inventory_message(saga: &Saga, body: &str) -> Result<(), MessageError> {
    match InventoryCommand::parse(body)? {
        InventoryCommand::Reserve(data) => {
            let lines = sum_lines(&data.items);
            if lines.is_empty() || lines.iter().any(|l| l.quantity == 0) {
                return Err(MessageError::Malformed(MalformedMessage::Unsupported {
                    kind: "inventory.reserve without quantities".into(),
                    version: messages::VERSION,
                }));
            }
            match saga.inventory.reserve(&data.order_id, &lines).await? {
                Reservation::Held => {
                    let products: Vec<_> = lines.iter().map(|l| l.product_id.clone()).collect();
                    stock_changed(saga, &products).await;
                    tracing::info!(order_id = %data.order_id, "stock reserved");
                    reply(saga, messages::reserved(&data.order_id)).await
                }
                Reservation::Rejected { product_id, reason } => {
                    tracing::info!(order_id = %data.order_id, %product_id, reason, "reservation rejected");
                    reply(
                        saga,
                        messages::rejected(&data.order_id, &product_id, reason),
                    )
                    .await
                }
                Reservation::AlreadyReleased => {
                    tracing::info!(order_id = %data.order_id, "order released before its reservation: nothing taken");
                    Ok(())
                }
            }
        }
        InventoryCommand::Release(data) => {
            if let Release::Restored(products) = saga.inventory.release(&data.order_id).await? {
                stock_changed(saga, &products).await;
                tracing::info!(order_id = %data.order_id, "stock released");
            }
            Ok(())
        }
        // Only `reserved` changes: no cached view shows it, so nothing is invalidated.
        InventoryCommand::Commit(data) => {
            if let Commit::Committed(_) = saga.inventory.commit(&data.order_id).await? {
                tracing::info!(order_id = %data.order_id, "reserved stock shipped");
            }
            Ok(())
        }
    }
}

/// Lines of one product summed (a message is trusted no more than a client).
fn sum_lines(items: &[ReserveLine]) -> Vec<ReserveLine> {
    let mut summed: BTreeMap<&ProductId, u32> = BTreeMap::new();
    for line in items {
        let entry = summed.entry(&line.product_id).or_default();
        *entry = entry.saturating_add(line.quantity);
    }
    summed
        .into_iter()
        .map(|(id, quantity)| ReserveLine {
            product_id: id.clone(),
            quantity,
        })
        .collect()
}

/// The order worker's step: `pending → confirmed` on a reservation, `pending → cancelled` on a
/// rejection; idempotent. A reservation for an order that was cancelled meanwhile is given
/// back (compensation).
#[tracing::instrument(skip_all)]
pub async fn handle_order_message(saga: &Saga, body: &str) -> Result<(), MessageError> {
    match InventoryOutcome::parse(body)? {
        InventoryOutcome::Reserved(data) => {
            let status = settle_pending(saga, &data.order_id, OrderStatus::Confirmed, None).await?;
            if status == OrderStatus::Cancelled {
                tracing::info!(order_id = %data.order_id, "reservation for a cancelled order: releasing it");
                reply(saga, messages::release(&data.order_id)).await?;
            }
            Ok(())
        }
        InventoryOutcome::Rejected(data) => {
            let reason = match data.reason.as_str() {
                "out_of_stock" => "out_of_stock",
                _ => "unavailable",
            };
            settle_pending(saga, &data.order_id, OrderStatus::Cancelled, Some(reason)).await?;
            Ok(())
        }
    }
}

/// What one relay run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RelayReport {
    /// Outbox messages sent (and forgotten).
    pub relayed: usize,
    /// Outbox messages that could not be sent (left for the next run).
    pub failed: usize,
    /// Pending orders cancelled with reason `timeout`.
    pub expired: usize,
    /// Stale pending orders left for the next run because this run relayed (or failed to
    /// relay) their messages.
    pub expiry_deferred: usize,
    /// Stale pending orders that could not be expired (logged; tried again next run).
    pub expiry_failed: usize,
}

/// The scheduled relay: resends outbox messages older than the relay delay, paging past the
/// ones it cannot send (and stopping when a whole page fails for a transient reason: the
/// destination is down); then cancels orders pending longer than the timeout (reason
/// `timeout`, releasing what was reserved), except those whose messages this run had to
/// relay: right after an SQS outage they get a run's interval to be confirmed instead of
/// timing out in the run that finally sent their reserve.
#[tracing::instrument(skip_all)]
pub async fn run_relay(saga: &Saga) -> Result<RelayReport, OrderError> {
    let mut report = RelayReport::default();
    let cutoff = Timestamp::now().minus(saga.settings.relay_delay);
    let mut after: Option<OutboxMessage> = None;
    let mut touched: HashSet<OrderId> = HashSet::new();
    for _ in 0..MAX_BATCHES {
        let batch = saga.outbox.unsent(cutoff, after.as_ref(), BATCH).await?;
        let results = join_all(batch.iter().map(|m| saga.sender.send(m))).await;
        let mut sent = Vec::new();
        let mut transient = 0;
        for (message, result) in batch.iter().zip(results) {
            touched.insert(message.order_id.clone());
            match result {
                Ok(()) => sent.push(message.clone()),
                Err(error) => {
                    report.failed += 1;
                    transient += usize::from(error.is_transient());
                    tracing::warn!(message_id = %message.id, destination = message.destination.as_str(), error = %zx_domain::cause_chain(&error), "relay could not send");
                }
            }
        }
        if let Err(error) = saga.outbox.mark_sent(&sent).await {
            // Sent but not forgotten: the next run sends them again (consumers are idempotent).
            tracing::warn!(error = %zx_domain::cause_chain(&error), "relayed messages not marked sent");
        }
        report.relayed += sent.len();
        if batch.len() < BATCH || transient == batch.len() {
            break;
        }
        after = batch.last().cloned();
    }
    let expiry = expire_pending(saga, &touched).await?;
    report.expired = expiry.expired;
    report.expiry_deferred = expiry.deferred;
    report.expiry_failed = expiry.failed;
    Ok(report)
}

/// What one expiry pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiry {
    pub expired: usize,
    pub deferred: usize,
    pub failed: usize,
}

/// Cancels orders pending for longer than the timeout, except those in `defer`. An order that
/// cannot be expired is logged, counted once and left for the next run.
pub async fn expire_pending(saga: &Saga, defer: &HashSet<OrderId>) -> Result<Expiry, OrderError> {
    let mut expiry = Expiry::default();
    let mut skipped: HashSet<OrderId> = HashSet::new();
    for _ in 0..MAX_BATCHES {
        let cutoff = Timestamp::now().minus(saga.settings.pending_timeout);
        let stale = saga.orders.stale_pending(cutoff, BATCH).await?;
        let mut progressed = false;
        for order in &stale {
            if skipped.contains(&order.id) {
                continue;
            }
            if defer.contains(&order.id) {
                expiry.deferred += 1;
                skipped.insert(order.id.clone());
                continue;
            }
            match settle_pending(saga, &order.id, OrderStatus::Cancelled, Some("timeout")).await {
                Ok(status) => {
                    expiry.expired += usize::from(status == OrderStatus::Cancelled);
                    progressed = true;
                }
                Err(error) => {
                    expiry.failed += 1;
                    skipped.insert(order.id.clone());
                    tracing::error!(order_id = %order.id, error = %zx_domain::cause_chain(&error), "could not expire a pending order");
                }
            }
        }
        // Orders left pending (deferred, failed) come first again: stop when nothing moved.
        if stale.len() < BATCH || !progressed {
            break;
        }
    }
    Ok(expiry)
}
