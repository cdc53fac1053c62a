//! The queue workers' steps: inventory commands (reserve, release, commit) verified against
//! the stored order, and the inventory's replies applied to the order.

use super::*;

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
pub async fn handle_inventory_message(
    steps: &InventorySteps,
    body: &str,
) -> Result<(), MessageError> {
    let command = InventoryCommand::parse(body)?;
    let order_id = match &command {
        InventoryCommand::Reserve(data) => &data.order_id,
        InventoryCommand::Release(data) | InventoryCommand::Commit(data) => &data.order_id,
    };
    let order = steps.orders.find_order(order_id).await?;
    if let Err(why) = verify(&command, order.as_ref()) {
        refused(&command, &why);
        return Ok(());
    }
    match command {
        InventoryCommand::Reserve(data) => {
            let reserve = Reserve {
                message_id: String::new(),
                data,
                trace: zx_http::trace::current(),
            };
            let mut results = reserve_verified(steps, vec![reserve]).await;
            results.pop().map_or(Ok(()), |(_, result)| result)
        }
        InventoryCommand::Release(data) => {
            if let Release::Restored(products) = steps.inventory.release(&data.order_id).await? {
                if let Some(views) = &steps.views {
                    views.stock_returned(&products).await;
                }
                tracing::info!(order_id = %data.order_id, "stock released");
            }
            Ok(())
        }
        // Only `reserved` changes: no cached view shows it, so nothing is invalidated.
        InventoryCommand::Commit(data) => {
            if let Commit::Committed(_) = steps.inventory.commit(&data.order_id).await? {
                tracing::info!(order_id = %data.order_id, "reserved stock shipped");
            }
            Ok(())
        }
    }
}

/// A reserve of a batch: its message id, what it asks, and its message's trace header.
#[derive(Debug, Clone)]
pub struct Reserve {
    pub message_id: String,
    pub data: ReserveData,
    pub trace: Option<TraceHeader>,
}

/// The inventory worker's step for the reserves of a batch:
/// every reserve is verified against its order (those that fail change nothing and succeed,
/// logged), the rest are reserved in one batch ([`InventoryRepository::reserve_batch`]: a
/// product's units taken in one conditional write per shard), the answers sent in batches, and
/// only then the cached views told (a sold-out product is marked). One result per message.
#[tracing::instrument(skip_all, fields(reserves = reserves.len()))]
pub async fn reserve_many(
    steps: &InventorySteps,
    reserves: Vec<Reserve>,
) -> Vec<(String, Result<(), MessageError>)> {
    let mut ids: Vec<OrderId> = reserves.iter().map(|r| r.data.order_id.clone()).collect();
    ids.sort();
    ids.dedup();
    // One read for the batch's orders.
    let found = match steps.orders.find_orders(&ids).await {
        Ok(found) => found,
        Err(error) => {
            return reserves
                .into_iter()
                .map(|r| (r.message_id, Err(each_error("read orders", &error).into())))
                .collect();
        }
    };
    let mut results = Vec::with_capacity(reserves.len());
    let mut verified = Vec::with_capacity(reserves.len());
    for reserve in reserves {
        let Reserve {
            message_id: id,
            data,
            trace,
        } = reserve;
        let row = found.iter().find(|r| r.key.0 == data.order_id.as_str());
        let order = match row.map(|r| &r.value) {
            Some(Err(why)) => {
                // Unreadable: it cannot be verified, and no retry makes it readable.
                tracing::error!(order_id = %data.order_id, %why, "reserve for an order that cannot be read: nothing changed");
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
                    verified.push(Reserve {
                        message_id: id,
                        data,
                        trace,
                    });
                }
            }
            Err(why) => {
                refused(&command, &why);
                results.push((id, Ok(())));
            }
        }
    }
    results.extend(reserve_verified(steps, verified).await);
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
    steps: &InventorySteps,
    reserves: Vec<Reserve>,
) -> Vec<(String, Result<(), MessageError>)> {
    if reserves.is_empty() {
        return Vec::new();
    }
    let mut orders: Vec<(OrderId, Vec<ReserveLine>)> = Vec::new();
    // Each order's trace: its first reserve's (a redelivery within the batch has the same).
    let mut traces: Vec<Option<&TraceHeader>> = Vec::new();
    let mut which: Vec<usize> = Vec::with_capacity(reserves.len());
    for reserve in &reserves {
        let data = &reserve.data;
        match orders.iter().position(|(id, _)| id == &data.order_id) {
            Some(i) => which.push(i),
            None => {
                which.push(orders.len());
                orders.push((data.order_id.clone(), sum_lines(&data.items)));
                traces.push(reserve.trace.as_ref());
            }
        }
    }
    let batch = match steps.inventory.reserve_batch(&orders).await {
        Ok(batch) => batch,
        Err(error) => {
            return reserves
                .into_iter()
                .map(|r| {
                    (
                        r.message_id,
                        Err(each_error("reserve batch", &error).into()),
                    )
                })
                .collect();
        }
    };
    let mut replies = Vec::new();
    let mut reply_of: Vec<Option<usize>> = Vec::with_capacity(orders.len());
    let mut taken: Vec<ProductId> = Vec::new();
    for (((order, lines), outcome), trace) in orders.iter().zip(&batch.outcomes).zip(&traces) {
        let trace_id = zx_http::trace::trace_id(*trace);
        // The answer joins the reserve's trace.
        let in_trace = |mut reply: OutboxMessage| {
            reply.trace = trace.map(|t| t.as_str().to_owned());
            reply
        };
        match outcome {
            Reservation::Held => {
                tracing::info!(order_id = %order, trace_id, "stock reserved");
                metrics::counter!(metric::RESERVATIONS).increment(1);
                taken.extend(lines.iter().map(|l| l.product_id.clone()));
                reply_of.push(Some(replies.len()));
                replies.push(in_trace(messages::reserved(order)));
            }
            Reservation::Rejected { product_id, reason } => {
                tracing::info!(order_id = %order, trace_id, %product_id, reason, "reservation rejected");
                let reason = if *reason == "out_of_stock" {
                    "out_of_stock"
                } else {
                    "unavailable"
                };
                metrics::counter!(metric::RESERVATION_REJECTIONS, "Reason" => reason).increment(1);
                reply_of.push(Some(replies.len()));
                replies.push(in_trace(messages::rejected(order, product_id, reason)));
            }
            Reservation::AlreadyReleased => {
                tracing::info!(order_id = %order, trace_id, "order released before its reservation: nothing taken");
                reply_of.push(None);
            }
        }
    }
    // Answers first: the order worker never waits on the cache.
    let sent = steps.sender.send_batch(&replies).await;
    if let Some(views) = &steps.views {
        taken.sort();
        taken.dedup();
        views.stock_taken(&taken, &batch.sold_out).await;
    }
    reserves
        .into_iter()
        .zip(which)
        .map(|(Reserve { message_id: id, .. }, order)| {
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
pub async fn handle_order_message(
    transitions: &Transitions,
    body: &str,
) -> Result<(), MessageError> {
    match InventoryOutcome::parse(body)? {
        InventoryOutcome::Reserved(data) => {
            let status = settle(
                transitions,
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
                transitions,
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
