//! Reading orders and moving them along the state machine (customers cancel, admins drive
//! the rest), each move stored with its messages.

use super::*;

/// The order `id` if `actor` may see it (others' orders are [`OrderError::NotFound`]).
/// Reads only: the functions that serve it are granted reads only.
pub async fn get_order(
    orders: &dyn OrderReader,
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
    orders: &dyn OrderReader,
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
    transitions: &Transitions,
    actor: &Actor,
    id: &OrderId,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<Order, OrderError> {
    let order = get_order(&*transitions.orders, actor, id).await?;
    let next = transition(transitions, actor, &order, to, reason).await?;
    Ok(next)
}

async fn transition(
    transitions: &Transitions,
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
    match transitions
        .orders
        .update_order(order, &next, &outgoing)
        .await
    {
        Ok(()) => {}
        Err(RepositoryError::ConcurrentUpdate) => return Err(OrderError::Conflict),
        Err(other) => return Err(other.into()),
    }
    tracing::info!(order_id = %order.id, from = %order.status, to = %to, actor = %actor.label(), "order status changed");
    count_transition(to, actor.driver, reason);
    dispatch(&transitions.dispatch, &outgoing).await;
    Ok(next)
}

/// A system transition of an order in status `from` (confirm or cancel a pending order, cancel
/// a confirmed one): re-read and decided again when it loses a race. Returns the status the
/// order has afterwards (untouched when it is no longer `from`).
pub(super) async fn settle(
    transitions: &Transitions,
    id: &OrderId,
    from: OrderStatus,
    to: OrderStatus,
    reason: Option<&str>,
) -> Result<OrderStatus, OrderError> {
    let system = Actor::system();
    for _ in 0..3 {
        let order = get_order(&*transitions.orders, &system, id).await?;
        if order.status != from {
            return Ok(order.status);
        }
        match transition(transitions, &system, &order, to, reason).await {
            Ok(next) => return Ok(next.status),
            Err(OrderError::Conflict) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(OrderError::Conflict)
}

/// The funnel's metrics: confirmations, payments, shipments, and cancellations by reason (a
/// bounded set: the system's reasons, or who cancelled).
fn count_transition(to: OrderStatus, driver: Driver, reason: Option<&str>) {
    let name = match to {
        OrderStatus::Confirmed => metric::ORDERS_CONFIRMED,
        OrderStatus::Paid => metric::ORDERS_PAID,
        OrderStatus::Shipped => metric::ORDERS_SHIPPED,
        OrderStatus::Cancelled => {
            metrics::counter!(metric::ORDERS_CANCELLED, "Reason" => cancel_reason(driver, reason))
                .increment(1);
            return;
        }
        _ => return,
    };
    metrics::counter!(name).increment(1);
}

/// The `Reason` dimension of a cancellation: one of [`metric::CANCEL_REASONS`].
fn cancel_reason(driver: Driver, reason: Option<&str>) -> &'static str {
    match driver {
        Driver::Customer => "customer",
        Driver::Admin => "admin",
        Driver::System => metric::CANCEL_REASONS
            .into_iter()
            .find(|known| Some(*known) == reason)
            .unwrap_or("unavailable"),
    }
}

#[cfg(test)]
mod metric_tests {
    use super::*;

    #[test]
    fn cancellation_reasons_are_a_closed_set() {
        assert_eq!(
            cancel_reason(Driver::Customer, Some("changed my mind")),
            "customer"
        );
        assert_eq!(
            cancel_reason(Driver::Admin, Some("fraud <script>")),
            "admin"
        );
        assert_eq!(
            cancel_reason(Driver::System, Some("payment_timeout")),
            "payment_timeout"
        );
        assert_eq!(
            cancel_reason(Driver::System, Some("anything else")),
            "unavailable"
        );
        assert_eq!(cancel_reason(Driver::System, None), "unavailable");
    }
}
