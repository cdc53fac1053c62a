//! The relay: unsent outbox rows resent (parked when they cannot be), finished records purged,
//! stale pending and unpaid confirmed orders expired.

use super::*;

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
    /// Age in milliseconds of the oldest unsent outbox row this run found due (0 when none
    /// was): the relay lag.
    pub oldest_unsent_ms: u64,
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
pub async fn run_relay(relay: &Relay, deadline: Instant) -> RelayReport {
    let mut report = RelayReport::default();
    let stop_at = deadline.checked_sub(RELAY_MARGIN).unwrap_or(deadline);
    // A backlog of messages never starves expiry and purges: the outbox has two thirds of the
    // run, what it leaves waits for the next run.
    let outbox_stop = Instant::now() + stop_at.saturating_duration_since(Instant::now()) * 2 / 3;
    let cutoff = Timestamp::now().minus(relay.settings.relay_delay);
    let mut after: Option<RowKey> = None;
    let mut down: HashSet<Destination> = HashSet::new();
    // No lag is reported when the outbox could not be read: its alarm treats that as a breach.
    let mut lag_known = true;
    loop {
        if Instant::now() >= outbox_stop || down.len() == 3 {
            report.outbox_left = true;
            break;
        }
        let rows = match relay.outbox.unsent(cutoff, after.as_ref(), BATCH).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(error = %zx_domain::cause_chain(&error), "relay could not read the outbox");
                report.outbox_left = true;
                lag_known = false;
                break;
            }
        };
        let Some(last) = rows.last() else { break };
        after = Some(last.key.clone());
        if let Some(oldest) = rows
            .iter()
            .filter_map(|row| row.value.as_ref().ok().map(|m| m.created_at))
            .min()
        {
            let age = Timestamp::now()
                .unix_millis()
                .saturating_sub(oldest.unix_millis());
            report.oldest_unsent_ms = report.oldest_unsent_ms.max(u64::try_from(age).unwrap_or(0));
        }
        let full = rows.len() == BATCH;
        let mut by_destination: HashMap<Destination, Vec<Held>> = HashMap::new();
        for row in rows {
            match row.value {
                Err(reason) => {
                    park(
                        relay,
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
                    let results = relay
                        .transitions
                        .dispatch
                        .sender
                        .send_batch(&messages)
                        .await;
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
                    Ok(()) => {
                        // Sent in the trace of the request that wrote it.
                        tracing::info!(
                            message_id = %item.message.id,
                            order_id = %item.message.order_id,
                            destination = destination.as_str(),
                            trace_id = item.message.trace.as_deref().and_then(TraceHeader::parse).as_ref().and_then(TraceHeader::root).unwrap_or_default(),
                            "relayed"
                        );
                        sent.push(item.message)
                    }
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
                            && let Err(error) = relay
                                .transitions
                                .dispatch
                                .orders
                                .start_pending_clock(&item.message.order_id, Timestamp::now())
                                .await
                        {
                            tracing::warn!(order_id = %item.message.order_id, error = %zx_domain::cause_chain(&error), "the pending clock of a parked reserve's order could not be started");
                        }
                        park(relay, &mut report, &item.key, &reason).await;
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
        report.relayed += forget_sent(&relay.transitions.dispatch, sent).await;
        if !full {
            break;
        }
    }
    report.outbox_left |= report.failed + report.deferred > 0;
    // Precision below a millisecond is not the point of a lag.
    #[allow(clippy::cast_precision_loss)]
    let lag = report.oldest_unsent_ms as f64;
    if lag_known {
        metrics::histogram!(metric::RELAY_LAG).record(lag);
    }
    metrics::counter!(metric::RELAYED).increment(u64::try_from(report.relayed).unwrap_or(0));
    expire(relay, &mut report, stop_at).await;
    purge(relay, &mut report, stop_at).await;
    report
}

/// Rows purged per kind per run: a backlog is worked off over several runs, each bounded.
const PURGE_LIMIT: u32 = 1_000;

/// Deletes what no one needs any more, in bounded batches, if the run has time left: expired
/// idempotency keys, finished reservations and stock change ids past their retention. A fault
/// is logged; the next run tries again.
async fn purge(relay: &Relay, report: &mut RelayReport, stop_at: Instant) {
    let now = Timestamp::now();
    let work = async {
        let (keys, finished) = futures::join!(
            relay.expiry.purge_expired_keys(now, PURGE_LIMIT),
            relay.purge.purge_finished(now, PURGE_LIMIT)
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

async fn park(relay: &Relay, report: &mut RelayReport, key: &RowKey, reason: &str) {
    match relay.outbox.park(key, reason).await {
        Ok(()) => {
            report.parked += 1;
            metrics::counter!(metric::PARKED_ROWS).increment(1);
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
async fn expire(relay: &Relay, report: &mut RelayReport, stop_at: Instant) {
    let rules = [
        (
            OrderStatus::Pending,
            relay.settings.pending_timeout,
            "timeout",
        ),
        (
            OrderStatus::Confirmed,
            relay.settings.payment_timeout,
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
            let rows = match relay.expiry.overdue(status, cutoff, BATCH).await {
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
                    Err(why) => match relay.expiry.park_order(&row.key, &why.0).await {
                        Ok(()) => {
                            report.orders_parked += 1;
                            metrics::counter!(metric::PARKED_ROWS).increment(1);
                            tracing::error!(row = %row.key, %why, "unreadable order parked: it is left out of expiry");
                        }
                        Err(error) => {
                            report.expiry_failed += 1;
                            tracing::error!(row = %row.key, %why, error = %zx_domain::cause_chain(&error), "unreadable order could not be parked");
                        }
                    },
                }
            }
            let progressed = !due.is_empty();
            let outcomes: Vec<(OrderId, Result<OrderStatus, OrderError>)> =
                futures::stream::iter(due)
                    .map(|id| async move {
                        let result = settle(
                            &relay.transitions,
                            &id,
                            status,
                            OrderStatus::Cancelled,
                            Some(reason),
                        )
                        .await;
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
