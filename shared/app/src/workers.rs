//! The non-HTTP functions: the SQS-triggered workers (partial batch responses) and the
//! scheduled outbox relay. Like the HTTP functions, each is built by one builder, called by its
//! `main.rs` and by the local gateway alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambda_runtime::{LambdaEvent, service_fn};
use tracing::Instrument;
use zx_orders::usecases::RelayReport;
use zx_orders::workers::{QueueMessage, Worker};

use crate::wiring::{Needs, Sends, Use, Wiring};
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
/// `template.yaml`), builder, what its cold start builds.
pub struct SqsFunction {
    pub name: &'static str,
    pub queue: &'static str,
    pub build: SqsBuilder,
    pub wiring: Wiring,
}

/// Messages per batch a queue worker receives (`BatchSize`).
pub const BATCH_SIZE: u16 = 10;
/// Batches of one queue handled at once (`ScalingConfig.MaximumConcurrency`): bounds the
/// Postgres connections the workers open.
pub const MAX_CONCURRENT_BATCHES: u16 = 10;
/// How often the relay runs, and how long one run may take.
pub const RELAY_SCHEDULE: &str = "rate(1 minute)";
pub const RELAY_TIMEOUT_SECONDS: u16 = 60;

pub const INVENTORY_WORKER: SqsFunction = SqsFunction {
    name: "inventory-worker",
    queue: "InventoryQueue",
    build: inventory_worker,
    // Reads the order each message names (to verify it), reserves, releases and commits
    // stock, answers on the order queue directly (no outbox), and marks the products' cached
    // views stale.
    wiring: Needs {
        inventory: Use::Write,
        orders: Use::Read,
        sends: Sends {
            order_queue: true,
            inventory_dlq: true,
            ..Sends::NONE
        },
        cache: true,
        ..Needs::NONE
    }
    .wiring(),
};
pub const ORDER_WORKER: SqsFunction = SqsFunction {
    name: "order-worker",
    queue: "OrderQueue",
    build: order_worker,
    // Confirms and cancels pending orders and publishes their events. The release of a
    // rejected order (a tombstone: nothing is held) stays in the outbox for the relay, so the
    // order worker may not send to the inventory queue.
    wiring: Needs {
        sends: Sends {
            order_events: true,
            order_dlq: true,
            ..Sends::NONE
        },
        ..ORDER_MOVES
    }
    .wiring(),
};

/// Every SQS-triggered function.
pub const SQS_FUNCTIONS: &[SqsFunction] = &[INVENTORY_WORKER, ORDER_WORKER];

/// What the relay's cold start builds.
/// Moving orders without a client: the order worker's transitions and the relay's expiry and
/// resends (no message on the order queue ever goes through the outbox).
const ORDER_MOVES: Needs = Needs {
    orders: Use::Write,
    outbox: Use::Write,
    sends: Sends::ORDER_MOVES,
    ..Needs::NONE
};

/// The relay also purges finished reservations and old stock change ids (Postgres).
pub const OUTBOX_RELAY: Wiring = Needs {
    inventory: Use::Read,
    ..ORDER_MOVES
}
.wiring();

fn worker(services: &Services, worker: Worker) -> Result<SqsHandler, ConfigError> {
    let saga = Arc::new(services.saga()?);
    Ok(Arc::new(move |event: SqsEvent, deadline: Instant| {
        let saga = saga.clone();
        Box::pin(async move {
            let started = Instant::now();
            let mut unidentified = 0usize;
            let messages: Vec<QueueMessage> = event
                .records
                .into_iter()
                .filter_map(|record| match record.message_id {
                    Some(id) => Some(QueueMessage {
                        id,
                        body: record.body.unwrap_or_default(),
                    }),
                    None => {
                        unidentified += 1;
                        None
                    }
                })
                .collect();
            let failed =
                zx_orders::workers::process_batch(&saga, worker, &messages, deadline).await;
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

/// `inventory-worker`: reserve and release stock.
pub fn inventory_worker(services: &Services) -> Result<SqsHandler, ConfigError> {
    worker(services, Worker::Inventory)
}

/// `order-worker`: confirm or cancel orders on the inventory's answer.
pub fn order_worker(services: &Services) -> Result<SqsHandler, ConfigError> {
    worker(services, Worker::Order)
}

/// `outbox-relay`: resend unsent messages, park what cannot be sent, expire overdue orders.
pub fn outbox_relay(services: &Services) -> Result<ScheduledHandler, ConfigError> {
    let saga = Arc::new(services.saga()?);
    Ok(Arc::new(move |deadline: Instant| {
        let saga = saga.clone();
        Box::pin(async move {
            let started = Instant::now();
            let report = zx_orders::usecases::run_relay(&saga, deadline).await;
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

fn refuse(error: ConfigError) -> ConfigError {
    tracing::error!(%error, "refusing to start: invalid configuration");
    error
}

/// An SQS function's `main`: cold start, build with `build`, serve batches with partial batch
/// responses.
pub async fn run_sqs(function: &SqsFunction) -> Result<(), lambda_runtime::Error> {
    let services = crate::start(&function.wiring).await?;
    let handler = (function.build)(&services).map_err(refuse)?;
    drop(services);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        let span = tracing::info_span!("invocation", lambda_request_id = %event.context.request_id);
        let deadline = deadline_of(&event.context);
        async move {
            crate::wiring::before_invocation().await;
            Ok::<_, std::convert::Infallible>(handler(event.payload, deadline).await)
        }
        .instrument(span)
    }))
    .await
}

/// The invocation's deadline (milliseconds since the epoch) as an instant of this clock.
fn deadline_of(context: &lambda_runtime::Context) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let left = u128::from(context.deadline).saturating_sub(now_ms);
    Instant::now()
        + std::time::Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX).min(900_000))
}

/// The relay's `main`: each scheduled event is one run, which ends before the invocation's
/// deadline and reports what it did and left (faults are logged at error level).
pub async fn run_scheduled() -> Result<(), lambda_runtime::Error> {
    let services = crate::start(&OUTBOX_RELAY).await?;
    let handler = outbox_relay(&services).map_err(refuse)?;
    drop(services);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let handler = handler.clone();
        let span = tracing::info_span!("invocation", lambda_request_id = %event.context.request_id);
        // The invocation's deadline (milliseconds since the epoch) as an instant of this clock.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let left = u128::from(event.context.deadline).saturating_sub(now_ms);
        let deadline = Instant::now()
            + std::time::Duration::from_millis(
                u64::try_from(left).unwrap_or(u64::MAX).min(900_000),
            );
        async move {
            crate::wiring::before_invocation().await;
            let report = handler(deadline).await;
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report).unwrap_or_default())
        }
        .instrument(span)
    }))
    .await
}
