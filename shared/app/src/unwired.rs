//! Stand-ins for what a function does not declare in its `Needs`: the saga's use cases take
//! every repository, but each function is granted (and wired with) only those it uses. A call
//! to a stand-in fails as a permanent fault naming the store, as the missing IAM grant would on
//! AWS. The local gateway runs every function through [`crate::Services::restricted`], so the
//! end-to-end tests fail when a function uses something its needs do not declare.

use std::sync::Arc;

use async_trait::async_trait;
use zx_domain::stock::StockRecords;
use zx_domain::{
    BatchReservation, Commit, Destination, Email, IdempotencyKey, IdempotencyRecord,
    InventoryRepository, MessageSender, Order, OrderCreation, OrderExpiry, OrderId, OrderPage,
    OrderQuery, OrderReader, OrderRepository, OrderStatus, OrderWriter, Outbox, OutboxMessage,
    Page, ParkedRow, Product, ProductId, ProductQuery, ProductReader, ProductRepository,
    ProductWriter, Release, RepositoryError, ReserveLine, Row, RowKey, Session, SessionId,
    SessionReader, SessionRepository, SessionRevoker, SessionRotator, SessionStarter,
    StandingReader, Stock, StockChange, StockChangeId, StockWriter, Timestamp, User, UserId,
    UserReader, UserRepository, UserWriter,
};

use crate::wiring::Sends;

/// A store the function is not wired with.
pub struct Unwired(pub &'static str);

impl Unwired {
    fn refuse<T>(&self) -> Result<T, RepositoryError> {
        Err(RepositoryError::Failed {
            operation: self.0,
            source: format!("this function is not wired with the {} store", self.0).into(),
        })
    }
}

#[async_trait]
impl ProductReader for Unwired {
    async fn find_product(&self, _: &ProductId) -> Result<Option<Product>, RepositoryError> {
        self.refuse()
    }
    async fn find_products(&self, _: &[ProductId]) -> Result<Vec<Product>, RepositoryError> {
        self.refuse()
    }
    async fn stock_records(&self, _: &ProductId) -> Result<Option<StockRecords>, RepositoryError> {
        self.refuse()
    }
    async fn list_products(&self, _: &ProductQuery) -> Result<Page<Product>, RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl OrderReader for Unwired {
    async fn find_order(&self, _: &OrderId) -> Result<Option<Order>, RepositoryError> {
        self.refuse()
    }
    async fn find_orders(&self, _: &[OrderId]) -> Result<Vec<Row<Order>>, RepositoryError> {
        self.refuse()
    }
    async fn list_orders(&self, _: &OrderQuery) -> Result<OrderPage, RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl OrderWriter for Unwired {
    async fn find_idempotency(
        &self,
        _: &UserId,
        _: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, RepositoryError> {
        self.refuse()
    }
    async fn create_order(
        &self,
        _: &Order,
        _: &IdempotencyRecord,
        _: &[OutboxMessage],
        _: u32,
    ) -> Result<OrderCreation, RepositoryError> {
        self.refuse()
    }
    async fn update_order(
        &self,
        _: &Order,
        _: &Order,
        _: &[OutboxMessage],
    ) -> Result<(), RepositoryError> {
        self.refuse()
    }
    async fn start_pending_clock(&self, _: &OrderId, _: Timestamp) -> Result<(), RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl OrderExpiry for Unwired {
    async fn overdue(
        &self,
        _: OrderStatus,
        _: Timestamp,
        _: usize,
    ) -> Result<Vec<Row<Order>>, RepositoryError> {
        self.refuse()
    }
    async fn park_order(&self, _: &RowKey, _: &str) -> Result<(), RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl Outbox for Unwired {
    async fn unsent(
        &self,
        _: Timestamp,
        _: Option<&RowKey>,
        _: usize,
    ) -> Result<Vec<Row<OutboxMessage>>, RepositoryError> {
        self.refuse()
    }
    async fn mark_sent(&self, _: &[OutboxMessage]) -> Result<(), RepositoryError> {
        self.refuse()
    }
    async fn park(&self, _: &RowKey, _: &str) -> Result<(), RepositoryError> {
        self.refuse()
    }
    async fn parked(&self, _: usize) -> Result<Vec<ParkedRow>, RepositoryError> {
        self.refuse()
    }
    async fn unpark(&self, _: &RowKey) -> Result<bool, RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl InventoryRepository for Unwired {
    async fn reserve_batch(
        &self,
        _: &[(OrderId, Vec<ReserveLine>)],
    ) -> Result<BatchReservation, RepositoryError> {
        self.refuse()
    }
    async fn release(&self, _: &OrderId) -> Result<Release, RepositoryError> {
        self.refuse()
    }
    async fn commit(&self, _: &OrderId) -> Result<Commit, RepositoryError> {
        self.refuse()
    }
}

/// Sends only to the destinations a function declares (the others it is not granted).
pub struct RestrictedSender {
    pub inner: Arc<dyn MessageSender>,
    pub sends: Sends,
}

impl RestrictedSender {
    /// `inner`, limited to `sends`.
    pub fn wrap(inner: Arc<dyn MessageSender>, sends: Sends) -> Arc<dyn MessageSender> {
        Arc::new(Self { inner, sends })
    }

    pub fn allows(sends: Sends, destination: Destination) -> bool {
        match destination {
            Destination::InventoryQueue => sends.inventory_queue,
            Destination::OrderQueue => sends.order_queue,
            Destination::OrderEvents => sends.order_events,
        }
    }
}

#[async_trait]
impl MessageSender for RestrictedSender {
    async fn send(&self, message: &OutboxMessage) -> Result<(), RepositoryError> {
        if Self::allows(self.sends, message.destination) {
            self.inner.send(message).await
        } else {
            Err(refuse_destination(message.destination))
        }
    }

    async fn send_batch(&self, messages: &[OutboxMessage]) -> Vec<Result<(), RepositoryError>> {
        if messages
            .iter()
            .all(|m| Self::allows(self.sends, m.destination))
        {
            return self.inner.send_batch(messages).await;
        }
        messages
            .iter()
            .map(|m| Err(refuse_destination(m.destination)))
            .collect()
    }

    fn sends_to(&self, destination: Destination) -> bool {
        Self::allows(self.sends, destination) && self.inner.sends_to(destination)
    }

    async fn dead_letter(
        &self,
        source: Destination,
        body: &str,
        reason: &str,
    ) -> Result<(), RepositoryError> {
        let allowed = match source {
            Destination::InventoryQueue => self.sends.inventory_dlq,
            Destination::OrderQueue => self.sends.order_dlq,
            Destination::OrderEvents => false,
        };
        if allowed {
            self.inner.dead_letter(source, body, reason).await
        } else {
            Err(RepositoryError::Failed {
                operation: "send",
                source: format!(
                    "this function does not send to the dead-letter queue of {source:?}"
                )
                .into(),
            })
        }
    }
}

fn refuse_destination(destination: Destination) -> RepositoryError {
    RepositoryError::Failed {
        operation: "send",
        source: format!("this function does not send to {destination:?}").into(),
    }
}

/// A store a function declares it only reads (`Use::Read`): reads pass, writes refuse, as the
/// function's read-only IAM grant would on AWS.
pub struct ReadOnly<T: ?Sized>(pub Arc<T>);

fn read_only<T>(store: &'static str) -> Result<T, RepositoryError> {
    Err(RepositoryError::Failed {
        operation: store,
        source: format!("this function only reads the {store} store").into(),
    })
}

#[async_trait]
impl UserReader for ReadOnly<dyn UserRepository> {
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, RepositoryError> {
        self.0.find_by_id(id).await
    }
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepositoryError> {
        self.0.find_by_email(email).await
    }
}

#[async_trait]
impl UserWriter for ReadOnly<dyn UserRepository> {
    async fn create(&self, _: &User) -> Result<(), RepositoryError> {
        read_only("users")
    }
    async fn update(&self, _: &User, _: &User) -> Result<(), RepositoryError> {
        read_only("users")
    }
    async fn replace_password_hash(&self, _: &User, _: &User) -> Result<(), RepositoryError> {
        read_only("users")
    }
}

/// Users a function reads and whose password hash it may replace (users-login's rehash), as
/// its IAM grant allows: every other write is refused.
pub struct RehashOnly(pub Arc<dyn UserRepository>);

#[async_trait]
impl UserReader for RehashOnly {
    async fn find_by_id(&self, id: &UserId) -> Result<Option<User>, RepositoryError> {
        self.0.find_by_id(id).await
    }
    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, RepositoryError> {
        self.0.find_by_email(email).await
    }
}

#[async_trait]
impl UserWriter for RehashOnly {
    async fn create(&self, _: &User) -> Result<(), RepositoryError> {
        read_only("users")
    }
    async fn update(&self, _: &User, _: &User) -> Result<(), RepositoryError> {
        read_only("users")
    }
    async fn replace_password_hash(
        &self,
        current: &User,
        next: &User,
    ) -> Result<(), RepositoryError> {
        self.0.replace_password_hash(current, next).await
    }
}

#[async_trait]
impl ProductReader for ReadOnly<dyn ProductRepository> {
    async fn find_product(&self, id: &ProductId) -> Result<Option<Product>, RepositoryError> {
        self.0.find_product(id).await
    }
    async fn find_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepositoryError> {
        self.0.find_products(ids).await
    }
    async fn stock_records(&self, id: &ProductId) -> Result<Option<StockRecords>, RepositoryError> {
        self.0.stock_records(id).await
    }
    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, RepositoryError> {
        self.0.list_products(query).await
    }
}

#[async_trait]
impl ProductWriter for ReadOnly<dyn ProductRepository> {
    async fn create_product(&self, _: &Product) -> Result<(), RepositoryError> {
        read_only("products")
    }
    async fn update_product(&self, _: &Product, _: &Product) -> Result<(), RepositoryError> {
        read_only("products")
    }
}

#[async_trait]
impl StockWriter for ReadOnly<dyn ProductRepository> {
    async fn change_stock(
        &self,
        _: &ProductId,
        _: StockChange,
        _: &StockChangeId,
    ) -> Result<Stock, RepositoryError> {
        read_only("products")
    }
    async fn set_stock_shards(
        &self,
        _: &ProductId,
        _: u16,
    ) -> Result<StockRecords, RepositoryError> {
        read_only("products")
    }
}

#[async_trait]
impl OrderReader for ReadOnly<dyn OrderRepository> {
    async fn find_order(&self, id: &OrderId) -> Result<Option<Order>, RepositoryError> {
        self.0.find_order(id).await
    }
    async fn find_orders(&self, ids: &[OrderId]) -> Result<Vec<Row<Order>>, RepositoryError> {
        self.0.find_orders(ids).await
    }
    async fn list_orders(&self, query: &OrderQuery) -> Result<OrderPage, RepositoryError> {
        self.0.list_orders(query).await
    }
}

#[async_trait]
impl OrderWriter for ReadOnly<dyn OrderRepository> {
    async fn find_idempotency(
        &self,
        user: &UserId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, RepositoryError> {
        self.0.find_idempotency(user, key).await
    }
    async fn create_order(
        &self,
        _: &Order,
        _: &IdempotencyRecord,
        _: &[OutboxMessage],
        _: u32,
    ) -> Result<OrderCreation, RepositoryError> {
        read_only("orders")
    }
    async fn update_order(
        &self,
        _: &Order,
        _: &Order,
        _: &[OutboxMessage],
    ) -> Result<(), RepositoryError> {
        read_only("orders")
    }
    async fn start_pending_clock(&self, _: &OrderId, _: Timestamp) -> Result<(), RepositoryError> {
        read_only("orders")
    }
}

#[async_trait]
impl OrderExpiry for ReadOnly<dyn OrderRepository> {
    async fn overdue(
        &self,
        status: OrderStatus,
        cutoff: Timestamp,
        limit: usize,
    ) -> Result<Vec<Row<Order>>, RepositoryError> {
        self.0.overdue(status, cutoff, limit).await
    }
    async fn park_order(&self, _: &RowKey, _: &str) -> Result<(), RepositoryError> {
        read_only("orders")
    }
}

/// Sessions limited to what a function declares ([`crate::wiring::SessionUse`]): the other
/// calls are refused, as their missing IAM grants would refuse them on AWS.
pub struct LimitedSessions {
    pub inner: Arc<dyn SessionRepository>,
    pub allowed: crate::wiring::SessionUse,
}

impl LimitedSessions {
    fn check(&self, allowed: bool, what: &str) -> Result<(), RepositoryError> {
        if allowed {
            Ok(())
        } else {
            Err(RepositoryError::Failed {
                operation: "sessions",
                source: format!("this function may not {what} a session").into(),
            })
        }
    }
}

#[async_trait]
impl SessionStarter for LimitedSessions {
    async fn create_session(&self, session: &Session) -> Result<(), RepositoryError> {
        self.check(self.allowed.start, "start")?;
        self.inner.create_session(session).await
    }
}

#[async_trait]
impl SessionReader for LimitedSessions {
    async fn find_session(&self, id: &SessionId) -> Result<Option<Session>, RepositoryError> {
        self.check(self.allowed.rotate || self.allowed.end, "read")?;
        self.inner.find_session(id).await
    }
}

#[async_trait]
impl SessionRotator for LimitedSessions {
    async fn rotate_session(
        &self,
        current: &Session,
        next: &Session,
    ) -> Result<(), RepositoryError> {
        self.check(self.allowed.rotate, "rotate")?;
        self.inner.rotate_session(current, next).await
    }
}

#[async_trait]
impl SessionRevoker for LimitedSessions {
    async fn revoke_session(&self, id: &SessionId) -> Result<(), RepositoryError> {
        self.check(self.allowed.rotate || self.allowed.end, "revoke")?;
        self.inner.revoke_session(id).await
    }
}

#[async_trait]
impl StandingReader for LimitedSessions {
    async fn find_standing(
        &self,
        id: &SessionId,
        user: &zx_domain::UserId,
    ) -> Result<Option<zx_domain::Standing>, RepositoryError> {
        self.check(self.allowed.check, "check")?;
        self.inner.find_standing(id, user).await
    }
}

/// The stores as `needs` declares them: those only read are wrapped in [`ReadOnly`], sessions
/// in [`LimitedSessions`].
pub fn read_only_where_declared(stores: &mut crate::Stores, needs: &crate::wiring::Needs) {
    use crate::wiring::{SessionUse, Use};
    if needs.sessions != SessionUse::ALL {
        stores.sessions = stores.sessions.take().map(|inner| {
            Arc::new(LimitedSessions {
                inner,
                allowed: needs.sessions,
            }) as Arc<dyn SessionRepository>
        });
    }
    if needs.users == Use::Read {
        stores.users = stores.users.take().map(|s| {
            if needs.rehash {
                Arc::new(RehashOnly(s)) as Arc<dyn UserRepository>
            } else {
                Arc::new(ReadOnly(s)) as Arc<dyn UserRepository>
            }
        });
    }
    if needs.products == Use::Read {
        stores.products = stores
            .products
            .take()
            .map(|s| Arc::new(ReadOnly(s)) as Arc<dyn ProductRepository>);
    }
    if needs.orders == Use::Read {
        stores.orders = stores
            .orders
            .take()
            .map(|s| Arc::new(ReadOnly(s)) as Arc<dyn OrderRepository>);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stand_in_refuses_naming_its_store_and_a_restricted_sender_its_destination() {
        let error = OrderReader::find_order(&Unwired("orders"), &OrderId::generate())
            .await
            .unwrap_err();
        assert!(matches!(
            error,
            RepositoryError::Failed {
                operation: "orders",
                ..
            }
        ));
        assert_eq!(
            zx_domain::cause_chain(&error),
            "orders failed: this function is not wired with the orders store"
        );
        let sends = Sends {
            order_queue: true,
            ..Sends::NONE
        };
        assert!(RestrictedSender::allows(sends, Destination::OrderQueue));
        let refused = read_only::<()>("users").unwrap_err();
        assert_eq!(
            zx_domain::cause_chain(&refused),
            "users failed: this function only reads the users store"
        );
        assert!(!RestrictedSender::allows(
            sends,
            Destination::InventoryQueue
        ));
        assert!(!RestrictedSender::allows(sends, Destination::OrderEvents));
    }
}
