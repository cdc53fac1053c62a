//! Stand-ins for what a function does not declare in its `Needs`: the saga's use cases take
//! every repository, but each function is granted (and wired with) only those it uses. A call
//! to a stand-in fails as a permanent fault naming the store, as the missing IAM grant would on
//! AWS. The local gateway runs every function through [`crate::Services::restricted`], so the
//! end-to-end tests fail when a function uses something its needs do not declare.

use std::sync::Arc;

use async_trait::async_trait;
use zx_domain::{
    Commit, Destination, IdempotencyKey, IdempotencyRecord, InventoryRepository, MessageSender,
    Order, OrderCreation, OrderId, OrderPage, OrderQuery, OrderRepository, Outbox, OutboxMessage,
    Page, Product, ProductId, ProductQuery, ProductReader, Release, RepositoryError, Reservation,
    ReserveLine, Timestamp, UserId,
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
    async fn list_products(&self, _: &ProductQuery) -> Result<Page<Product>, RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl OrderRepository for Unwired {
    async fn find_order(&self, _: &OrderId) -> Result<Option<Order>, RepositoryError> {
        self.refuse()
    }
    async fn list_orders(&self, _: &OrderQuery) -> Result<OrderPage, RepositoryError> {
        self.refuse()
    }
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
    async fn stale_pending(&self, _: Timestamp, _: usize) -> Result<Vec<Order>, RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl Outbox for Unwired {
    async fn unsent(
        &self,
        _: Timestamp,
        _: Option<&OutboxMessage>,
        _: usize,
    ) -> Result<Vec<OutboxMessage>, RepositoryError> {
        self.refuse()
    }
    async fn mark_sent(&self, _: &[OutboxMessage]) -> Result<(), RepositoryError> {
        self.refuse()
    }
}

#[async_trait]
impl InventoryRepository for Unwired {
    async fn reserve(
        &self,
        _: &OrderId,
        _: &[ReserveLine],
    ) -> Result<Reservation, RepositoryError> {
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
            Err(RepositoryError::Failed {
                operation: "send",
                source: format!("this function does not send to {:?}", message.destination).into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stand_in_refuses_naming_its_store_and_a_restricted_sender_its_destination() {
        let error = OrderRepository::find_order(&Unwired("orders"), &OrderId::generate())
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
        assert!(!RestrictedSender::allows(
            sends,
            Destination::InventoryQueue
        ));
        assert!(!RestrictedSender::allows(sends, Destination::OrderEvents));
    }
}
