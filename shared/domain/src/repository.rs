//! Repository traits: the storage contract every backend (DynamoDB, Postgres) implements and the
//! contract test suite in `tests/` checks. Split by capability so handlers ask for the least.

use async_trait::async_trait;

use crate::{
    CategoryCount, Commit, Email, IdempotencyKey, IdempotencyRecord, Order, OrderId, OrderPage,
    OrderQuery, OrderStatus, OutboxMessage, Page, ParkedRow, Product, ProductId, ProductQuery,
    Release, RepositoryError, Reservation, ReserveLine, Row, RowKey, Session, SessionId, Stock,
    StockChangeId, Timestamp, User, UserId,
};

/// Reads users. Reads are strongly consistent: a user stored a moment ago is found.
#[async_trait]
pub trait UserReader: Send + Sync {
    /// The user with this id, if any.
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, RepositoryError>;

    /// The user with this (normalised) e-mail address, if any.
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepositoryError>;
}

/// Stores users, enforcing unique e-mail and (case-insensitive) username atomically.
#[async_trait]
pub trait UserWriter: Send + Sync {
    /// Stores a new user. Fails with [`RepositoryError::Conflict`] naming the field when the
    /// e-mail or the username is taken; of many concurrent creations with one e-mail exactly
    /// one succeeds.
    async fn create(&self, user: &User) -> Result<(), RepositoryError>;

    /// Replaces `current` with `next` (same id, `next.version == current.version + 1`), only if
    /// the stored version is still `current.version`; otherwise
    /// [`RepositoryError::ConcurrentUpdate`]. A changed e-mail or username that another user
    /// holds gives [`RepositoryError::Conflict`] and changes nothing.
    async fn update(&self, current: &User, next: &User) -> Result<(), RepositoryError>;
}

/// Replaces password hashes: a login's rehash, its own IAM grant.
#[async_trait]
pub trait PasswordRehasher: Send + Sync {
    /// Replaces only the password hash of `current` (a rehash at login), as a new version, if
    /// the stored version is still `current.version`; otherwise
    /// [`RepositoryError::ConcurrentUpdate`]. Nothing else of the user is written, so the IAM
    /// grant of the function that calls it can be limited to these attributes.
    async fn replace_password_hash(
        &self,
        current: &User,
        next: &User,
    ) -> Result<(), RepositoryError>;
}

/// Starts sessions (refresh tokens): a login.
#[async_trait]
pub trait SessionStarter: Send + Sync {
    /// Stores a new session. An existing session with the same id is
    /// [`RepositoryError::ConcurrentUpdate`].
    async fn create_session(&self, session: &Session) -> Result<(), RepositoryError>;
}

/// Reads sessions. Strongly consistent.
#[async_trait]
pub trait SessionReader: Send + Sync {
    /// The session with this id, revoked or expired or not, if any.
    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, RepositoryError>;
}

/// Rotates a session's refresh token: a refresh.
#[async_trait]
pub trait SessionRotator: Send + Sync {
    /// Replaces `current` with `next` (a new token hash and expiry, see [`Session::rotated`])
    /// only if, atomically: the stored token hash is still `current.token_hash`, the session is
    /// not revoked, and the user's session epoch is still `current.user_epoch`. Otherwise
    /// [`RepositoryError::ConcurrentUpdate`] and nothing changes: of two refreshes with one
    /// token exactly one succeeds.
    async fn rotate_session(
        &self,
        current: &Session,
        next: &Session,
    ) -> Result<(), RepositoryError>;
}

/// Ends sessions: a logout, or a refresh that finds its token replayed.
#[async_trait]
pub trait SessionRevoker: Send + Sync {
    /// Marks the session revoked. Revoking a revoked or unknown session succeeds.
    async fn revoke_session(&self, id: &SessionId) -> Result<(), RepositoryError>;
}

/// Reads whether an access token's session still stands: the checked routes.
#[async_trait]
pub trait StandingReader: Send + Sync {
    /// The session `id` and the current epoch and role of `user`, read together (strongly
    /// consistent); `None` when either is missing.
    async fn find_standing(
        &self,
        id: &SessionId,
        user: &crate::UserId,
    ) -> Result<Option<crate::Standing>, RepositoryError>;
}

/// What a refresh does to sessions: read, rotate, revoke on a replay.
pub trait SessionRotation: SessionReader + SessionRotator + SessionRevoker {}

impl<T: SessionReader + SessionRotator + SessionRevoker> SessionRotation for T {}

/// What a logout does to sessions: read, revoke.
pub trait SessionEnding: SessionReader + SessionRevoker {}

impl<T: SessionReader + SessionRevoker> SessionEnding for T {}

/// Every session operation, for adapters and for wiring.
pub trait SessionRepository:
    SessionStarter + SessionRotation + SessionEnding + StandingReader
{
}

impl<T: SessionStarter + SessionRotation + SessionEnding + StandingReader> SessionRepository for T {}

/// Both halves, for adapters and for wiring.
pub trait UserRepository: UserReader + UserWriter + PasswordRehasher + UserSignIn {}

impl<T: UserReader + UserWriter + PasswordRehasher> UserRepository for T {}

/// What a login does to users: reads them, and replaces a hash stored at a lower cost.
pub trait UserSignIn: UserReader + PasswordRehasher {}

impl<T: UserReader + PasswordRehasher> UserSignIn for T {}

/// Reads the catalogue. Reads by id are strongly consistent; listings come from an index that
/// may lag behind the latest writes.
#[async_trait]
pub trait ProductReader: Send + Sync {
    /// The product with this id, soft-deleted or not (the caller decides what to show).
    /// Strongly consistent.
    async fn find_product(&self, id: &ProductId) -> Result<Option<Product>, RepositoryError>;

    /// The products with these ids that exist (soft-deleted or not), in any order; unknown ids
    /// are left out. Strongly consistent: what the last completed write stored. At most 100 ids.
    async fn find_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepositoryError>;

    /// The product's stock records (every shard, consistent), whether it is live, and so the
    /// tag `PUT /stock {available}` must match. `None` for an unknown product.
    async fn stock_records(
        &self,
        id: &ProductId,
    ) -> Result<Option<crate::stock::StockRecords>, RepositoryError>;

    /// Products passing `query`'s filters (soft-deleted ones never), newest first
    /// (`created_at`, then id, descending), at most `query.limit` of them, starting after
    /// `query.after`. `next` is set when more may follow. A walk from the first page to the
    /// last returns every product that existed when it began exactly once, whatever is
    /// inserted meanwhile.
    ///
    /// The listing comes from an index that may lag behind the table (DynamoDB GSIs are
    /// eventually consistent): membership and field values can be those of a moment ago.
    /// Stock counters are not read (they live apart from the catalogue): callers that show
    /// products re-read them with [`ProductReader::find_products`].
    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, RepositoryError>;
}

/// Writes the catalogue (not the stock counters: see [`StockWriter`]).
#[async_trait]
pub trait ProductWriter: Send + Sync {
    /// Stores a new product. Storing the same product again (a retried request whose first
    /// response was lost) succeeds and changes nothing; another product with the same id is
    /// [`RepositoryError::ConcurrentUpdate`].
    async fn create_product(&self, product: &Product) -> Result<(), RepositoryError>;

    /// Replaces the catalogue fields (name, description, price, category, images, deleted_at,
    /// updated_at, version) of `current` with those of `next`, only if the stored version is
    /// still `current.version`; otherwise [`RepositoryError::ConcurrentUpdate`]. Stock counters
    /// are left as they are.
    async fn update_product(
        &self,
        current: &Product,
        next: &Product,
    ) -> Result<(), RepositoryError>;
}

/// A change of available stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockChange {
    /// Set available stock to `available` (0 to [`Stock::MAX_UNITS`]), only if the stock is
    /// still what `tag` ([`crate::stock::StockRecords::tag`]) was made of: units reserved since
    /// the caller read it are never forgotten.
    Set { available: i64, tag: String },
    /// Add this (possibly negative) amount to available stock.
    Adjust(i64),
}

impl StockChange {
    /// What the change does, as stored with its id: a retry must carry the same change.
    pub fn fingerprint(&self) -> String {
        match self {
            Self::Set { available, .. } => format!("set:{available}"),
            Self::Adjust(delta) => format!("adjust:{delta}"),
        }
    }

    /// Refuses a change no stock could take: a level outside `0..=MAX_UNITS`, an adjustment
    /// larger than that range.
    pub fn check_bounds(&self) -> Result<(), RepositoryError> {
        match self {
            Self::Set { available, .. } if *available < 0 => {
                Err(RepositoryError::InsufficientStock)
            }
            Self::Set { available, .. } if *available > Stock::MAX_UNITS => {
                Err(RepositoryError::StockLimitExceeded)
            }
            Self::Adjust(delta) if *delta > Stock::MAX_UNITS => {
                Err(RepositoryError::StockLimitExceeded)
            }
            Self::Adjust(delta) if *delta < -Stock::MAX_UNITS => {
                Err(RepositoryError::InsufficientStock)
            }
            _ => Ok(()),
        }
    }
}

/// Changes stock counters atomically and idempotently.
#[async_trait]
pub trait StockWriter: Send + Sync {
    /// Applies `change` to the available stock of a product that exists and is not deleted,
    /// atomically, and returns the counters. Available stock stays within
    /// `0..=Stock::MAX_UNITS`, checked as a condition of the write
    /// ([`RepositoryError::InsufficientStock`], [`RepositoryError::StockLimitExceeded`]);
    /// reserved stock is not touched.
    ///
    /// `change_id` names this change: applying a change with an id already applied (a retry
    /// whose first response was lost) changes nothing and returns the current counters. Ids are
    /// remembered for at least 24 hours. An id already applied to another product or with
    /// another change is [`RepositoryError::IdempotencyKeyReused`] and changes nothing.
    async fn change_stock(
        &self,
        id: &ProductId,
        change: StockChange,
        change_id: &StockChangeId,
    ) -> Result<Stock, RepositoryError>;

    /// Splits the product's stock into `shards` records (1 to
    /// [`crate::stock::MAX_SHARDS`]): new reservations spread over them. Available units move
    /// so they sit evenly on the active shards, by relative changes, so reservations made
    /// meanwhile lose no unit; shards beyond the count are retired (they keep their reserved
    /// units until those are released or shipped). Returns the stock afterwards.
    async fn set_stock_shards(
        &self,
        id: &ProductId,
        shards: u16,
    ) -> Result<crate::stock::StockRecords, RepositoryError>;
}

/// Counts the catalogue's live products by category (`GET /categories`).
#[async_trait]
pub trait CategoryReader: Send + Sync {
    /// Every category with at least one live (not deleted) product, by id, with its count. Its
    /// cost does not grow with the catalogue on DynamoDB (one item of counters, kept by every
    /// catalogue write); on Postgres it is one aggregate over the category index.
    async fn categories(&self) -> Result<Vec<CategoryCount>, RepositoryError>;
}

/// Every catalogue capability, for adapters.
pub trait ProductRepository: ProductReader + ProductWriter + StockWriter + CategoryReader {}

impl<T: ProductReader + ProductWriter + StockWriter + CategoryReader> ProductRepository for T {}

/// The outcome of storing a new order under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCreation {
    /// The order, its key and its messages are stored.
    Created,
    /// The key was already used (and has not expired): nothing was stored. The record says
    /// for what.
    KeyTaken(IdempotencyRecord),
    /// The customer already holds the most open (pending or confirmed) orders allowed:
    /// nothing was stored.
    TooManyOpen,
}

/// Reads orders: what the order reads (`orders-get`, `orders-list`) and the workers'
/// verifications need.
#[async_trait]
pub trait OrderReader: Send + Sync {
    /// The order with this id, if any. Strongly consistent.
    async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, RepositoryError>;

    /// The orders with these ids that exist, in any order, each keyed by its id: one that
    /// cannot be read is returned as such (its reason), never failing the others. Strongly
    /// consistent; as few round trips as the store allows (the inventory worker verifies a
    /// whole batch at once).
    async fn find_orders(&self, ids: &[OrderId]) -> Result<Vec<Row<Order>>, RepositoryError>;

    /// Orders passing `query`'s filters, newest first (`created_at`, then id, descending),
    /// at most `query.limit`, starting after `query.after`; `next` is set when more may follow.
    /// Listings come from indexes that may lag a moment behind the latest writes.
    async fn list_orders(&self, query: &OrderQuery) -> Result<OrderPage, RepositoryError>;
}

/// Places and moves orders: an order, its idempotency key and its messages in one atomic write
/// (the transactional outbox), and each transition with its messages.
#[async_trait]
pub trait OrderWriter: Send + Sync {
    /// What `key` was used for by `user`, unless it has expired.
    async fn find_idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, RepositoryError>;

    /// Stores a new order, its idempotency record and its outgoing messages atomically: all of
    /// them, or (when the key is taken) none. Of concurrent creations with one key exactly one
    /// is [`OrderCreation::Created`]. The customer's count of open orders (pending or
    /// confirmed) goes up by one in the same write, only if it is below `open_limit`;
    /// otherwise [`OrderCreation::TooManyOpen`] and nothing is stored.
    async fn create_order(
        &self,
        order: &Order,
        key: &IdempotencyRecord,
        messages: &[OutboxMessage],
        open_limit: u32,
    ) -> Result<OrderCreation, RepositoryError>;

    /// Replaces `current` with `next` (a transition: `next.version == current.version + 1`)
    /// and stores `messages`, atomically, only if the stored order still has `current`'s status
    /// and version; otherwise [`RepositoryError::ConcurrentUpdate`] and nothing is written.
    async fn update_order(
        &self,
        current: &Order,
        next: &Order,
        messages: &[OutboxMessage],
    ) -> Result<(), RepositoryError>;

    /// Starts the pending order's clock at `at` (its reserve was sent then), unless it has
    /// started: the pending timeout counts from here, so an order whose reserve never left
    /// the outbox (our own outage) never times out. An order no longer pending is left as it
    /// is.
    async fn start_pending_clock(&self, id: &OrderId, at: Timestamp)
    -> Result<(), RepositoryError>;
}

/// What the relay does to orders that wait: finds the overdue ones, sets unreadable ones
/// aside, purges expired idempotency keys.
#[async_trait]
pub trait OrderExpiry: Send + Sync {
    /// Orders in `status` whose clock started before `cutoff`, oldest first, at most `limit`:
    /// pending orders by when their reserve was sent, others by when they entered `status`.
    /// An order that cannot be read is returned as such (to be parked), never failing the
    /// page; parked orders are never returned again.
    async fn overdue(
        &self,
        status: OrderStatus,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Row<Order>>, RepositoryError>;

    /// Sets an order that cannot be read aside with `reason`: [`OrderExpiry::overdue`]
    /// never returns it again. The row is kept for an operator.
    async fn park_order(&self, key: &RowKey, reason: &str) -> Result<(), RepositoryError>;

    /// Deletes up to `limit` idempotency keys that expired before `now`; returns how many. A
    /// store whose records expire by themselves (DynamoDB's TTL) has nothing to do.
    async fn purge_expired_keys(
        &self,
        _now: crate::Timestamp,
        _limit: u32,
    ) -> Result<u64, RepositoryError> {
        Ok(0)
    }
}

/// Orders, their idempotency keys and their outbox rows live in one store, so that an order and
/// the messages it sends are written in one atomic write: every part, for adapters and wiring.
pub trait OrderRepository: OrderReader + OrderWriter + OrderExpiry + OrderStore {}

impl<T: OrderReader + OrderWriter + OrderExpiry> OrderRepository for T {}

/// Reads and writes orders: placing and moving them (not expiry).
pub trait OrderStore: OrderReader + OrderWriter {}

impl<T: OrderReader + OrderWriter> OrderStore for T {}

/// The outbox: messages stored with the writes that caused them, until they are sent.
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Unsent messages created before `cutoff`, oldest first (by creation time, then id),
    /// after the row `after` when given (a cursor: a reader pages forward past rows it cannot
    /// send, never reading the oldest page again), at most `limit`. A row that cannot be read
    /// is returned as such, never failing the page. Parked rows are not returned.
    async fn unsent(
        &self,
        cutoff: Timestamp,
        after: Option<&RowKey>,
        limit: usize,
    ) -> Result<Vec<Row<OutboxMessage>>, RepositoryError>;

    /// Forgets sent messages (unknown ones are ignored).
    async fn mark_sent(&self, messages: &[OutboxMessage]) -> Result<(), RepositoryError>;

    /// Sets the row `key` aside with `reason` (it cannot be read, or its destination refuses
    /// it for good): kept, never returned by [`Outbox::unsent`] again, listed by
    /// [`Outbox::parked`]. Parking a row that is gone (sent meanwhile) succeeds.
    async fn park(&self, key: &RowKey, reason: &str) -> Result<(), RepositoryError>;

    /// Parked rows, oldest first, at most `limit`.
    async fn parked(&self, limit: usize) -> Result<Vec<ParkedRow>, RepositoryError>;

    /// Puts a parked row back among the unsent (an operator resends it): `false` when no
    /// such parked row exists.
    async fn unpark(&self, key: &RowKey) -> Result<bool, RepositoryError>;
}

/// What a batch of reservations came to: one outcome per order, in order, and the products
/// the batch left without available units (for the sold-out mark).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchReservation {
    pub outcomes: Vec<Reservation>,
    pub sold_out: Vec<ProductId>,
}

/// Stock reservations: the inventory side of the saga. The reservation record of an order is
/// the idempotency key of reserve, release and commit.
#[async_trait]
pub trait InventoryRepository: Send + Sync {
    /// Reserves a batch of orders (distinct ids; each order's lines one per product, summed by
    /// the caller), each all or none: every line's units move from `available` to `reserved`,
    /// taken from a shard that holds enough (or from several when none alone does), and the
    /// order's reservation is recorded in the same atomic write. Orders are taken in turn, so
    /// the batch holds as many as the stock allows. A reservation already recorded for an order
    /// (a redelivery, or a release that came first) changes nothing and is reported as it is.
    /// Collisions with other writers are retried; only a lack of stock is
    /// [`Reservation::Rejected`]. The stock is written in as few conditional writes as the store
    /// allows (one per product shard the batch takes from on DynamoDB, one statement on
    /// Postgres).
    async fn reserve_batch(
        &self,
        orders: &[(OrderId, Vec<ReserveLine>)],
    ) -> Result<BatchReservation, RepositoryError>;

    /// [`InventoryRepository::reserve_batch`] of one order.
    async fn reserve(
        &self,
        order: &OrderId,
        lines: &[ReserveLine],
    ) -> Result<Reservation, RepositoryError> {
        let batch = self
            .reserve_batch(&[(order.clone(), lines.to_vec())])
            .await?;
        batch
            .outcomes
            .into_iter()
            .next()
            .ok_or_else(|| RepositoryError::failed("reserve", "the batch answered no outcome"))
    }

    /// Gives a held reservation back (`reserved` to `available`, on the shards it was taken
    /// from) exactly once. Without a reservation, records a released one so that a later
    /// reserve takes nothing. A committed (shipped) reservation is not given back.
    async fn release(&self, order: &OrderId) -> Result<Release, RepositoryError>;

    /// Takes a held reservation out of `reserved` for good (the order shipped), exactly once.
    /// Anything but a held reservation is [`Commit::Nothing`].
    async fn commit(&self, order: &OrderId) -> Result<Commit, RepositoryError>;
}

/// Purges finished reservations: the relay's housekeeping, apart from taking stock.
#[async_trait]
pub trait ReservationPurge: Send + Sync {
    /// Deletes up to `limit` each of the reservation records finished (released or committed)
    /// more than [`RESERVATION_RETENTION`] before `now`, and of the stock change records older
    /// than [`STOCK_CHANGE_RETENTION`]. A held reservation is never purged. A store whose
    /// records expire by themselves (DynamoDB's TTL) has nothing to do.
    async fn purge_finished(
        &self,
        _now: crate::Timestamp,
        _limit: u32,
    ) -> Result<Purged, RepositoryError> {
        Ok(Purged::default())
    }
}

/// Reservations and their purge: what an adapter of the inventory implements.
pub trait InventoryStore: InventoryRepository + ReservationPurge {}

impl<T: InventoryRepository + ReservationPurge> InventoryStore for T {}

/// How long a finished reservation record is kept: longer than a message can wait in a queue
/// or its dead-letter queue (14 days), so a redelivery still finds it.
pub const RESERVATION_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(15 * 24 * 3600);
/// How long a stock change id is remembered: a client retries within it.
pub const STOCK_CHANGE_RETENTION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// What [`InventoryRepository::purge_finished`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub reservations: u64,
    pub stock_changes: u64,
}

/// Sends outgoing messages to their destination (a queue or the events topic).
#[async_trait]
pub trait MessageSender: Send + Sync {
    /// Sends one message. Failing is [`RepositoryError::Unavailable`] when retrying may help.
    async fn send(&self, message: &OutboxMessage) -> Result<(), RepositoryError>;

    /// Sends several messages (batched per destination where the transport allows): one
    /// result per message, in order.
    async fn send_batch(&self, messages: &[OutboxMessage]) -> Vec<Result<(), RepositoryError>> {
        let mut results = Vec::with_capacity(messages.len());
        for message in messages {
            results.push(self.send(message).await);
        }
        results
    }

    /// Whether this sender may send to `destination` (a function sends only where it is
    /// granted; what it may not send stays in the outbox for the relay).
    fn sends_to(&self, _destination: crate::Destination) -> bool {
        true
    }

    /// Sends a message that cannot be handled (malformed) straight to the dead-letter queue of
    /// the queue `source` it came from, with `reason`, so it is not retried for nothing.
    async fn dead_letter(
        &self,
        source: crate::Destination,
        _body: &str,
        _reason: &str,
    ) -> Result<(), RepositoryError> {
        Err(RepositoryError::failed(
            "dead letter",
            format!("no dead-letter queue is configured for {}", source.as_str()),
        ))
    }
}
