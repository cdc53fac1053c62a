//! The non-HTTP functions: the SQS-triggered workers (partial batch responses) and the
//! scheduled outbox relay. Like the HTTP functions, each is declared once, its needs following
//! from its ports (`crate::ports`), and built by one builder that its `main.rs` and the local
//! gateway call alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use zx_http::trace::TraceHeader;
use zx_orders::usecases::{InventorySteps, Relay, RelayReport};
use zx_orders::workers::{QueueMessage, Worker};

use crate::capabilities::{Needs, OrderAnswers};
use crate::ports::{Moving, Port};
use crate::{ConfigError, Services};

/// An SQS-triggered function: a batch and the instant it must be answered by in, the records
/// that failed (or did not finish in time) out.
pub type SqsHandler = Arc<
    dyn Fn(SqsEvent, Instant) -> Pin<Box<dyn Future<Output = SqsBatchResponse> + Send>>
        + Send
        + Sync,
>;

/// Builds an SQS function's handler from the services of its cold start.
pub type SqsBuilder = fn(&Services) -> Result<SqsHandler, ConfigError>;

/// The scheduled relay: one run that ends before the deadline it is given, and its report.
pub type ScheduledHandler =
    Arc<dyn Fn(Instant) -> Pin<Box<dyn Future<Output = RelayReport> + Send>> + Send + Sync>;

/// One SQS-triggered function: binary name, the queue it reads (its logical id in
/// `template.yaml`), builder, what its cold start builds and is granted.
pub struct SqsFunction {
    pub name: &'static str,
    pub queue: &'static str,
    pub build: SqsBuilder,
    pub needs: Needs,
}

/// The ports of a queue worker, as the worker they feed.
pub trait WorkerPorts: Port {
    fn worker(self) -> Worker;
}

impl WorkerPorts for InventorySteps {
    fn worker(self) -> Worker {
        Worker::Inventory(self)
    }
}

impl WorkerPorts for Moving<OrderAnswers> {
    fn worker(self) -> Worker {
        Worker::Order(self.0)
    }
}

impl SqsFunction {
    /// The worker fed by `queue` with the ports `P`: built from them, granted what they need.
    const fn of<P: WorkerPorts>(name: &'static str, queue: &'static str) -> Self {
        Self {
            name,
            queue,
            build: worker::<P>,
            needs: P::NEEDS,
        }
    }
}

/// Messages per batch a queue worker receives (`BatchSize`).
pub const BATCH_SIZE: u16 = 10;
/// Batches of one queue handled at once (`ScalingConfig.MaximumConcurrency`): bounds the
/// Postgres connections the workers open.
pub const MAX_CONCURRENT_BATCHES: u16 = 10;
/// How often the relay runs, and how long one run may take.
pub const RELAY_SCHEDULE: &str = "rate(1 minute)";
pub const RELAY_TIMEOUT_SECONDS: u16 = 60;

/// `inventory-worker`: reserves, releases and commits stock, each verified against its order.
pub const INVENTORY_WORKER: SqsFunction =
    SqsFunction::of::<InventorySteps>("inventory-worker", "InventoryQueue");
/// `order-worker`: confirms or cancels orders on the inventory's answer and publishes their
/// events.
pub const ORDER_WORKER: SqsFunction =
    SqsFunction::of::<Moving<OrderAnswers>>("order-worker", "OrderQueue");

/// Every SQS-triggered function.
pub const SQS_FUNCTIONS: &[SqsFunction] = &[INVENTORY_WORKER, ORDER_WORKER];

/// The relay's binary name.
pub const OUTBOX_RELAY_NAME: &str = "outbox-relay";
/// What the relay's cold start builds and is granted: its ports' needs.
pub const OUTBOX_RELAY: Needs = <Relay as Port>::NEEDS;

/// The trace a record's message was sent in (its `AWSTraceHeader` system attribute), if it
/// carries a valid one.
pub fn record_trace(record: &SqsMessage) -> Option<TraceHeader> {
    record
        .attributes
        .get("AWSTraceHeader")
        .and_then(|header| TraceHeader::parse(header))
}

fn worker<P: WorkerPorts>(services: &Services) -> Result<SqsHandler, ConfigError> {
    let worker = Arc::new(P::wire(services)?.worker());
    Ok(Arc::new(move |event: SqsEvent, deadline: Instant| {
        let worker = worker.clone();
        Box::pin(async move {
            let started = Instant::now();
            let mut unidentified = 0usize;
            let messages: Vec<QueueMessage> = event
                .records
                .into_iter()
                .filter_map(|record| match record.message_id.clone() {
                    Some(id) => Some(QueueMessage {
                        trace: record_trace(&record),
                        id,
                        body: record.body.unwrap_or_default(),
                    }),
                    None => {
                        unidentified += 1;
                        None
                    }
                })
                .collect();
            let failed = zx_orders::workers::process_batch(&worker, &messages, deadline).await;
            tracing::info!(
                worker = worker.name(),
                records = messages.len() + unidentified,
                failed = failed.len(),
                unidentified,
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "batch processed"
            );
            let mut response = SqsBatchResponse::default();
            response.batch_item_failures = failed
                .into_iter()
                .map(|id| {
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id;
                    failure
                })
                .collect();
            response
        })
    }))
}

/// `outbox-relay`: resend unsent messages, park what cannot be sent, expire overdue orders.
pub fn outbox_relay(services: &Services) -> Result<ScheduledHandler, ConfigError> {
    let relay = Arc::new(<Relay as Port>::wire(services)?);
    Ok(Arc::new(move |deadline: Instant| {
        let relay = relay.clone();
        Box::pin(async move {
            let started = Instant::now();
            let report = zx_orders::usecases::run_relay(&relay, deadline).await;
            tracing::info!(
                relayed = report.relayed,
                failed = report.failed,
                deferred = report.deferred,
                parked = report.parked,
                outbox_left = report.outbox_left,
                expired = report.expired,
                payment_expired = report.payment_expired,
                expiry_failed = report.expiry_failed,
                orders_parked = report.orders_parked,
                expiry_left = report.expiry_left,
                latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                "relay run"
            );
            report
        })
    }))
}

/// The SQS function named `binary`.
pub fn sqs_function(binary: &str) -> Option<&'static SqsFunction> {
    SQS_FUNCTIONS.iter().find(|f| f.name == binary)
}
