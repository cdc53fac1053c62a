//! The use cases of orders and inventory, over the repository traits only: the HTTP handlers,
//! the queue workers and the relay call these, and tests can call them without either.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::future::join_all;
use zx_domain::{
    Commit, Destination, Driver, IdempotencyKey, IdempotencyRecord, InventoryRepository,
    MessageSender, Order, OrderCreation, OrderId, OrderLine, OrderPage, OrderQuery,
    OrderRepository, OrderStatus, Outbox, OutboxMessage, ProductId, ProductReader, Release,
    RepositoryError, Reservation, ReserveLine, RowKey, ShippingAddress, StatusChange, Timestamp,
    UserId,
};

use crate::messages::{self, InventoryCommand, InventoryOutcome, MalformedMessage, ReserveData};

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

/// Sends `messages` now (those this function may send) and forgets the ones sent; what fails
/// or is not this function's to send stays in the outbox for the relay (logged, never an
/// error: the order is already safe).
pub async fn dispatch(saga: &Saga, messages: &[OutboxMessage]) {
    let mine: Vec<OutboxMessage> = messages
        .iter()
        .filter(|m| saga.sender.sends_to(m.destination))
        .cloned()
        .collect();
    if mine.is_empty() {
        return;
    }
    let results = saga.sender.send_batch(&mine).await;
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
    forget_sent(saga, sent).await;
}

/// Starts the pending clock of the orders whose reserve was just sent, then forgets the sent
/// messages. A reserve whose clock could not be started stays in the outbox: the relay sends it
/// again (the inventory takes stock once) and starts the clock then.
/// Whether an outbox message is an order's `inventory.reserve`.
fn is_reserve(message: &OutboxMessage) -> bool {
    message.destination == Destination::InventoryQueue
        && messages::kind_of(&message.body).as_deref() == Some(messages::RESERVE)
}

async fn forget_sent(saga: &Saga, sent: Vec<OutboxMessage>) -> usize {
    if sent.is_empty() {
        return 0;
    }
    let now = Timestamp::now();
    let clocks = join_all(sent.iter().map(|message| async move {
        if is_reserve(message) {
            saga.orders
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
    if let Err(error) = saga.outbox.mark_sent(&forget).await {
        // Sent but not forgotten: sent again later (consumers are idempotent).
        tracing::warn!(error = %zx_domain::cause_chain(&error), "sent messages not marked; the relay may send them again");
    }
    forget.len()
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
    // A sale's sold-out product is refused here, before an order is stored and a reserve sent.
    if let Some(views) = &saga.views
        && let Some(product) = views.known_sold_out(&ids).await
    {
        tracing::info!(product_id = %product, "order refused: product known sold out");
        return Err(OrderError::SoldOut(product));
    }
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
    match saga
        .orders
        .create_order(&order, &record, &outgoing, saga.settings.max_open)
        .await?
    {
        OrderCreation::Created => {}
        OrderCreation::KeyTaken(existing) => return replay(saga, &existing, &fingerprint).await,
        OrderCreation::TooManyOpen => {
            tracing::info!(
                max_open = saga.settings.max_open,
                "order refused: too many open orders"
            );
            return Err(OrderError::TooManyOpen(saga.settings.max_open));
        }
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

/// A system transition of an order in status `from` (confirm or cancel a pending order, cancel
/// a confirmed one): re-read and decided again when it loses a race. Returns the status the
/// order has afterwards (untouched when it is no longer `from`).
async fn settle(
    saga: &Saga,
    id: &OrderId,
    from: OrderStatus,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<OrderStatus, OrderError> {
    let system = Actor::system();
    for _ in 0..3 {
        let order = get_order(&*saga.orders, &system, id).await?;
        if order.status != from {
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

/// Why an inventory message is refused: what it asks does not fit the stored order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Refusal {
    #[error("names no order")]
    NoOrder,
    #[error("reserve for an order that is {0}")]
    NotPending(OrderStatus),
    #[error("reserve whose lines differ from the order's")]
    LinesDiffer,
    #[error("release for an order that is {0}")]
    NotEnded(OrderStatus),
    #[error("commit for an order that is {0} and never shipped")]
    NeverShipped(OrderStatus),
}

/// What an inventory message may do to the order it names, decided from the stored order
/// (SPEC §3: consumers verify what a message asks against the order).
fn verify(command: &InventoryCommand, order: Option<&Order>) -> Result<(), Refusal> {
    let Some(order) = order else {
        return Err(Refusal::NoOrder);
    };
    match command {
        InventoryCommand::Reserve(data) => {
            if order.status != OrderStatus::Pending {
                return Err(Refusal::NotPending(order.status));
            }
            let ordered: Vec<ReserveLine> = sum_lines(
                &order
                    .lines
                    .iter()
                    .map(|line| ReserveLine {
                        product_id: line.product_id.clone(),
                        quantity: line.quantity,
                    })
                    .collect::<Vec<_>>(),
            );
            if sum_lines(&data.items) != ordered {
                return Err(Refusal::LinesDiffer);
            }
            Ok(())
        }
        // Only an order that was cancelled or refunded gives stock back.
        InventoryCommand::Release(_) => match order.status {
            OrderStatus::Cancelled | OrderStatus::Refunded => Ok(()),
            other => Err(Refusal::NotEnded(other)),
        },
        // Only an order that shipped takes its units out of stock for good.
        InventoryCommand::Commit(_) => {
            if order.history.iter().any(|c| c.to == OrderStatus::Shipped) {
                Ok(())
            } else {
                Err(Refusal::NeverShipped(order.status))
            }
        }
    }
}

/// The inventory worker's step: reserve (all or nothing), release or commit an order's stock,
/// each only when the stored order asks for it, then tell the order worker. Redeliveries change
/// stock once; a forged or stray message changes nothing (logged at error).
#[tracing::instrument(skip_all)]
pub async fn handle_inventory_message(saga: &Saga, body: &str) -> Result<(), MessageError> {
    let command = InventoryCommand::parse(body)?;
    let order_id = match &command {
        InventoryCommand::Reserve(data) => &data.order_id,
        InventoryCommand::Release(data) | InventoryCommand::Commit(data) => &data.order_id,
    };
    let order = saga.orders.find_order(order_id).await?;
    if let Err(why) = verify(&command, order.as_ref()) {
        refused(&command, &why);
        return Ok(());
    }
    match command {
        InventoryCommand::Reserve(data) => {
            let mut results = reserve_verified(saga, vec![(String::new(), data)]).await;
            results.pop().map_or(Ok(()), |(_, result)| result)
        }
        InventoryCommand::Release(data) => {
            if let Release::Restored(products) = saga.inventory.release(&data.order_id).await? {
                if let Some(views) = &saga.views {
                    views.stock_returned(&products).await;
                }
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

/// The inventory worker's step for the reserves of a batch, `(message id, reserve)` each:
/// every reserve is verified against its order (those that fail change nothing and succeed,
/// logged), the rest are reserved in one batch ([`InventoryRepository::reserve_batch`]: a
/// product's units taken in one conditional write per shard), the answers sent in batches, and
/// only then the cached views told (a sold-out product is marked). One result per message.
#[tracing::instrument(skip_all, fields(reserves = reserves.len()))]
pub async fn reserve_many(
    saga: &Saga,
    reserves: Vec<(String, ReserveData)>,
) -> Vec<(String, Result<(), MessageError>)> {
    let mut ids: Vec<OrderId> = reserves.iter().map(|(_, d)| d.order_id.clone()).collect();
    ids.sort();
    ids.dedup();
    // One read for the batch's orders.
    let found = match saga.orders.find_orders(&ids).await {
        Ok(found) => found,
        Err(error) => {
            return reserves
                .into_iter()
                .map(|(id, _)| (id, Err(each_error("read orders", &error).into())))
                .collect();
        }
    };
    let mut results = Vec::with_capacity(reserves.len());
    let mut verified = Vec::with_capacity(reserves.len());
    for (id, data) in reserves {
        let row = found.iter().find(|r| r.key.0 == data.order_id.as_str());
        let order = match row.map(|r| &r.value) {
            Some(Err(why)) => {
                // Unreadable: it cannot be verified, and no retry makes it readable.
                tracing::error!(order_id = %data.order_id, why, "reserve for an order that cannot be read: nothing changed");
                results.push((id, Ok(())));
                continue;
            }
            Some(Ok(order)) => Some(order),
            None => None,
        };
        let command = InventoryCommand::Reserve(data);
        match verify(&command, order) {
            Ok(()) => {
                if let InventoryCommand::Reserve(data) = command {
                    verified.push((id, data));
                }
            }
            Err(why) => {
                refused(&command, &why);
                results.push((id, Ok(())));
            }
        }
    }
    results.extend(reserve_verified(saga, verified).await);
    results
}

fn refused(command: &InventoryCommand, why: &Refusal) {
    let order_id = match command {
        InventoryCommand::Reserve(data) => &data.order_id,
        InventoryCommand::Release(data) | InventoryCommand::Commit(data) => &data.order_id,
    };
    // A redelivered reserve after its order moved on is expected; anything else is not.
    if let Refusal::NotPending(_) = why {
        tracing::info!(order_id = %order_id, %why, "inventory message for an order that moved on: nothing changed");
    } else {
        tracing::error!(order_id = %order_id, %why, "inventory message refused: nothing changed");
    }
}

/// Reserves verified reserves in one batch (several messages for one order, a redelivery
/// within the batch, count once), then answers each order.
async fn reserve_verified(
    saga: &Saga,
    reserves: Vec<(String, ReserveData)>,
) -> Vec<(String, Result<(), MessageError>)> {
    if reserves.is_empty() {
        return Vec::new();
    }
    let mut orders: Vec<(OrderId, Vec<ReserveLine>)> = Vec::new();
    let mut which: Vec<usize> = Vec::with_capacity(reserves.len());
    for (_, data) in &reserves {
        match orders.iter().position(|(id, _)| id == &data.order_id) {
            Some(i) => which.push(i),
            None => {
                which.push(orders.len());
                orders.push((data.order_id.clone(), sum_lines(&data.items)));
            }
        }
    }
    let batch = match saga.inventory.reserve_batch(&orders).await {
        Ok(batch) => batch,
        Err(error) => {
            return reserves
                .into_iter()
                .map(|(id, _)| (id, Err(each_error("reserve batch", &error).into())))
                .collect();
        }
    };
    let mut replies = Vec::new();
    let mut reply_of: Vec<Option<usize>> = Vec::with_capacity(orders.len());
    let mut taken: Vec<ProductId> = Vec::new();
    for ((order, lines), outcome) in orders.iter().zip(&batch.outcomes) {
        match outcome {
            Reservation::Held => {
                tracing::info!(order_id = %order, "stock reserved");
                taken.extend(lines.iter().map(|l| l.product_id.clone()));
                reply_of.push(Some(replies.len()));
                replies.push(messages::reserved(order));
            }
            Reservation::Rejected { product_id, reason } => {
                tracing::info!(order_id = %order, %product_id, reason, "reservation rejected");
                reply_of.push(Some(replies.len()));
                replies.push(messages::rejected(order, product_id, reason));
            }
            Reservation::AlreadyReleased => {
                tracing::info!(order_id = %order, "order released before its reservation: nothing taken");
                reply_of.push(None);
            }
        }
    }
    // Answers first: the order worker never waits on the cache.
    let sent = saga.sender.send_batch(&replies).await;
    if let Some(views) = &saga.views {
        taken.sort();
        taken.dedup();
        views.stock_taken(&taken, &batch.sold_out).await;
    }
    reserves
        .into_iter()
        .zip(which)
        .map(|((id, _), order)| {
            let result = match reply_of.get(order).copied().flatten() {
                None => Ok(()),
                Some(reply) => match sent.get(reply) {
                    Some(Ok(())) => Ok(()),
                    Some(Err(error)) => Err(each_error("reply", error).into()),
                    None => Err(MessageError::Repository(RepositoryError::failed(
                        "reply", "not sent",
                    ))),
                },
            };
            (id, result)
        })
        .collect()
}

/// A copy of one call's error (as transient as it was) for each message it answers.
fn each_error(operation: &'static str, error: &RepositoryError) -> RepositoryError {
    let detail = zx_domain::cause_chain(error);
    if error.is_transient() {
        RepositoryError::unavailable(operation, detail)
    } else {
        RepositoryError::failed(operation, detail)
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
/// rejection; idempotent. A reservation for an order that was cancelled meanwhile needs no
/// answer: every cancellation of a pending order carries its own release.
#[tracing::instrument(skip_all)]
pub async fn handle_order_message(saga: &Saga, body: &str) -> Result<(), MessageError> {
    match InventoryOutcome::parse(body)? {
        InventoryOutcome::Reserved(data) => {
            let status = settle(
                saga,
                &data.order_id,
                OrderStatus::Pending,
                OrderStatus::Confirmed,
                None,
            )
            .await?;
            if status == OrderStatus::Cancelled {
                tracing::info!(order_id = %data.order_id, "reservation for a cancelled order: its release gives it back");
            }
            Ok(())
        }
        InventoryOutcome::Rejected(data) => {
            let reason = match data.reason.as_str() {
                "out_of_stock" => "out_of_stock",
                _ => "unavailable",
            };
            settle(
                saga,
                &data.order_id,
                OrderStatus::Pending,
                OrderStatus::Cancelled,
                Some(reason),
            )
            .await?;
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
    /// Outbox messages whose send failed for a transient reason (left for the next run).
    pub failed: usize,
    /// Outbox messages not tried because their destination was down in this run (left for the
    /// next run; other destinations' messages still flowed).
    pub deferred: usize,
    /// Outbox rows parked in this run (unreadable, or refused for good by their destination).
    pub parked: usize,
    /// Whether rows were left for the next run: failed or deferred sends, or rows not reached
    /// (a store fault, or the deadline).
    pub outbox_left: bool,
    /// Pending orders cancelled with reason `timeout`.
    pub expired: usize,
    /// Confirmed orders cancelled with reason `payment_timeout`.
    pub payment_expired: usize,
    /// Overdue orders that could not be cancelled (logged; tried again next run).
    pub expiry_failed: usize,
    /// Overdue orders that could not be read, parked in this run.
    pub orders_parked: usize,
    /// Whether overdue orders were left for the next run (a store fault, or the deadline).
    pub expiry_left: bool,
    /// Idempotency keys past their expiry deleted in this run (Postgres; DynamoDB's TTL
    /// deletes its own).
    pub purged_keys: u64,
    /// Finished reservation records past their retention deleted in this run (Postgres;
    /// DynamoDB's TTL deletes its own).
    pub purged_reservations: u64,
    /// Stock change records past their retention deleted in this run (likewise).
    pub purged_stock_changes: u64,
}

/// A message the relay holds: its row, and the message.
struct Held {
    key: RowKey,
    message: OutboxMessage,
}

/// The scheduled relay. It resends outbox messages older than the relay delay, oldest first,
/// paging forward by cursor: a row it cannot read, or that its destination refuses for good, is
/// parked (never blocking the rows behind it); a destination that fails for a transient reason
/// is left alone for the rest of the run while the others' messages still flow; sends are
/// batched. Then it cancels what is overdue: pending orders whose reserve was sent longer than
/// the pending timeout ago (reason `timeout`; an order whose reserve never left the outbox is
/// never expired) and confirmed orders not paid within the payment timeout (reason
/// `payment_timeout`), each releasing its stock. It starts no page after `deadline` less a
/// margin, and reports what it left.
#[tracing::instrument(skip_all)]
pub async fn run_relay(saga: &Saga, deadline: Instant) -> RelayReport {
    let mut report = RelayReport::default();
    let stop_at = deadline.checked_sub(RELAY_MARGIN).unwrap_or(deadline);
    // A backlog of messages never starves expiry and purges: the outbox has two thirds of the
    // run, what it leaves waits for the next run.
    let outbox_stop = Instant::now() + stop_at.saturating_duration_since(Instant::now()) * 2 / 3;
    let cutoff = Timestamp::now().minus(saga.settings.relay_delay);
    let mut after: Option<RowKey> = None;
    let mut down: HashSet<Destination> = HashSet::new();
    loop {
        if Instant::now() >= outbox_stop || down.len() == 3 {
            report.outbox_left = true;
            break;
        }
        let rows = match saga.outbox.unsent(cutoff, after.as_ref(), BATCH).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(error = %zx_domain::cause_chain(&error), "relay could not read the outbox");
                report.outbox_left = true;
                break;
            }
        };
        let Some(last) = rows.last() else { break };
        after = Some(last.key.clone());
        let full = rows.len() == BATCH;
        let mut by_destination: HashMap<Destination, Vec<Held>> = HashMap::new();
        for row in rows {
            match row.value {
                Err(reason) => {
                    park(
                        saga,
                        &mut report,
                        &row.key,
                        &format!("unreadable: {reason}"),
                    )
                    .await;
                }
                Ok(message) if down.contains(&message.destination) => report.deferred += 1,
                Ok(message) => by_destination
                    .entry(message.destination)
                    .or_default()
                    .push(Held {
                        key: row.key,
                        message,
                    }),
            }
        }
        let sends = join_all(
            by_destination
                .into_iter()
                .map(|(destination, held)| async move {
                    let messages: Vec<OutboxMessage> =
                        held.iter().map(|h| h.message.clone()).collect();
                    let results = saga.sender.send_batch(&messages).await;
                    (destination, held, results)
                }),
        )
        .await;
        let mut sent = Vec::new();
        for (destination, held, results) in sends {
            let mut transient = 0;
            let tried = held.len();
            for (item, result) in held.into_iter().zip(results) {
                match result {
                    Ok(()) => sent.push(item.message),
                    Err(error) if error.is_transient() => {
                        transient += 1;
                        report.failed += 1;
                        tracing::warn!(message_id = %item.message.id, destination = destination.as_str(), error = %zx_domain::cause_chain(&error), "relay could not send (transient)");
                    }
                    Err(error) => {
                        let reason = format!(
                            "refused by {}: {}",
                            destination.as_str(),
                            zx_domain::cause_chain(&error)
                        );
                        // An order whose reserve cannot be sent must not wait for ever (and
                        // hold one of its customer's open places): its clock starts now, so it
                        // expires by the pending timeout unless an operator resends it first.
                        if is_reserve(&item.message)
                            && let Err(error) = saga
                                .orders
                                .start_pending_clock(&item.message.order_id, Timestamp::now())
                                .await
                        {
                            tracing::warn!(order_id = %item.message.order_id, error = %zx_domain::cause_chain(&error), "the pending clock of a parked reserve's order could not be started");
                        }
                        park(saga, &mut report, &item.key, &reason).await;
                    }
                }
            }
            if tried > 0 && transient == tried {
                tracing::warn!(
                    destination = destination.as_str(),
                    "destination down: its messages wait for the next run"
                );
                down.insert(destination);
            }
        }
        report.relayed += forget_sent(saga, sent).await;
        if !full {
            break;
        }
    }
    report.outbox_left |= report.failed + report.deferred > 0;
    expire(saga, &mut report, stop_at).await;
    purge(saga, &mut report, stop_at).await;
    report
}

/// Rows purged per kind per run: a backlog is worked off over several runs, each bounded.
const PURGE_LIMIT: u32 = 1_000;

/// Deletes what no one needs any more, in bounded batches, if the run has time left: expired
/// idempotency keys, finished reservations and stock change ids past their retention. A fault
/// is logged; the next run tries again.
async fn purge(saga: &Saga, report: &mut RelayReport, stop_at: Instant) {
    let now = Timestamp::now();
    let work = async {
        let (keys, finished) = futures::join!(
            saga.orders.purge_expired_keys(now, PURGE_LIMIT),
            saga.inventory.purge_finished(now, PURGE_LIMIT)
        );
        (keys, finished)
    };
    let Ok((keys, finished)) = tokio::time::timeout_at(stop_at.into(), work).await else {
        tracing::warn!("purge stopped at the run's deadline: the next run goes on");
        return;
    };
    match keys {
        Ok(purged) => report.purged_keys = purged,
        Err(error) => {
            tracing::error!(error = %zx_domain::cause_chain(&error), "could not purge expired idempotency keys");
        }
    }
    match finished {
        Ok(purged) => {
            report.purged_reservations = purged.reservations;
            report.purged_stock_changes = purged.stock_changes;
        }
        Err(error) => {
            tracing::error!(error = %zx_domain::cause_chain(&error), "could not purge finished reservations and stock changes");
        }
    }
}

async fn park(saga: &Saga, report: &mut RelayReport, key: &RowKey, reason: &str) {
    match saga.outbox.park(key, reason).await {
        Ok(()) => {
            report.parked += 1;
            tracing::error!(row = %key, reason, "outbox row parked: an operator can list and resend it (zx-admin outbox parked)");
        }
        Err(error) => {
            report.outbox_left = true;
            tracing::error!(row = %key, reason, error = %zx_domain::cause_chain(&error), "outbox row could not be parked");
        }
    }
}

/// Cancels the overdue orders: pending ones (`timeout`), then confirmed ones
/// (`payment_timeout`).
async fn expire(saga: &Saga, report: &mut RelayReport, stop_at: Instant) {
    let rules = [
        (
            OrderStatus::Pending,
            saga.settings.pending_timeout,
            "timeout",
        ),
        (
            OrderStatus::Confirmed,
            saga.settings.payment_timeout,
            "payment_timeout",
        ),
    ];
    for (status, timeout, reason) in rules {
        let mut skipped: HashSet<OrderId> = HashSet::new();
        for page in 0.. {
            if page == MAX_EXPIRY_PAGES || Instant::now() >= stop_at {
                report.expiry_left = true;
                break;
            }
            let cutoff = Timestamp::now().minus(timeout);
            let rows = match saga.orders.overdue(status, cutoff, BATCH).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::error!(%status, error = %zx_domain::cause_chain(&error), "could not read overdue orders");
                    report.expiry_left = true;
                    break;
                }
            };
            let full = rows.len() == BATCH;
            let mut due = Vec::new();
            for row in rows {
                match row.value {
                    Ok(order) if skipped.contains(&order.id) => {}
                    Ok(order) => due.push(order.id),
                    Err(why) => match saga.orders.park_order(&row.key, &why).await {
                        Ok(()) => {
                            report.orders_parked += 1;
                            tracing::error!(row = %row.key, why, "unreadable order parked: it is left out of expiry");
                        }
                        Err(error) => {
                            report.expiry_failed += 1;
                            tracing::error!(row = %row.key, why, error = %zx_domain::cause_chain(&error), "unreadable order could not be parked");
                        }
                    },
                }
            }
            let progressed = !due.is_empty();
            let outcomes: Vec<(OrderId, Result<OrderStatus, OrderError>)> =
                futures::stream::iter(due)
                    .map(|id| async move {
                        let result =
                            settle(saga, &id, status, OrderStatus::Cancelled, Some(reason)).await;
                        (id, result)
                    })
                    .buffer_unordered(EXPIRY_CONCURRENCY)
                    .collect()
                    .await;
            for (id, outcome) in outcomes {
                match outcome {
                    Ok(OrderStatus::Cancelled) if status == OrderStatus::Pending => {
                        report.expired += 1
                    }
                    Ok(OrderStatus::Cancelled) => report.payment_expired += 1,
                    Ok(_) => {}
                    Err(error) => {
                        report.expiry_failed += 1;
                        tracing::error!(order_id = %id, error = %zx_domain::cause_chain(&error), "could not cancel an overdue order");
                        skipped.insert(id);
                    }
                }
            }
            // Orders left overdue (failed) come first again: stop when nothing moved.
            if !full || !progressed {
                break;
            }
        }
    }
}
