//! The queue workers' step, free of Lambda and SQS types: a batch of (message id, body) in, the
//! ids of the messages that failed out (reported as `batchItemFailures`, so only those are
//! redelivered, and a message that keeps failing reaches the dead-letter queue).
//!
//! - A message that cannot be parsed is sent to its queue's dead-letter queue at once and
//!   reported done: retrying cannot make it valid.
//! - The inventory worker's reserves are taken together ([`usecases::reserve_many`]); its
//!   releases and commits, and the order worker's messages, up to [`CONCURRENCY`] at once.
//! - The batch ends before its deadline: what is not finished by then is reported failed (and
//!   redelivered), never the whole batch; what finished is never reported, so it is not
//!   processed again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tracing::Instrument;
use zx_domain::{Destination, MessageSender};
use zx_http::trace::{TraceHeader, with_trace};

use crate::messages::{InventoryCommand, InventoryOutcome, MalformedMessage};
use crate::usecases::{self, InventorySteps, MessageError, Transitions};

/// Messages of one batch handled at once (besides the batch's bulk reservation): a worker's
/// Postgres pool holds one more than this (`WorkerPgConnections` in template.yaml).
pub const CONCURRENCY: usize = 10;
/// What a batch keeps in hand before its deadline, to report its outcome.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// Which worker a queue feeds, with what its steps work with.
#[derive(Clone)]
pub enum Worker {
    /// `inventory-worker`: reserve, release and commit.
    Inventory(InventorySteps),
    /// `order-worker`: confirm or cancel on the inventory's answer.
    Order(Transitions),
}

impl Worker {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Inventory(_) => "inventory-worker",
            Self::Order(_) => "order-worker",
        }
    }

    /// The queue this worker consumes.
    pub fn queue(&self) -> Destination {
        match self {
            Self::Inventory(_) => Destination::InventoryQueue,
            Self::Order(_) => Destination::OrderQueue,
        }
    }

    /// Where it answers, and dead-letters what it cannot parse.
    fn sender(&self) -> &dyn MessageSender {
        match self {
            Self::Inventory(steps) => &*steps.sender,
            Self::Order(transitions) => &*transitions.dispatch.sender,
        }
    }
}

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub body: String,
    /// Its `AWSTraceHeader`: the trace of the request that caused it, which its handling
    /// (log lines, and the messages it sends) joins.
    pub trace: Option<TraceHeader>,
}

/// Handles every message of a batch and returns the ids of those that failed or did not finish
/// by `deadline` (less [`DEADLINE_MARGIN`]); each is logged with its message id.
pub async fn process_batch(
    worker: &Worker,
    messages: &[QueueMessage],
    deadline: Instant,
) -> Vec<String> {
    let stop_at = deadline.checked_sub(DEADLINE_MARGIN).unwrap_or(deadline);
    let done: Mutex<HashMap<String, Result<(), MessageError>>> = Mutex::new(HashMap::new());
    let finish = |id: String, result: Result<(), MessageError>| {
        if let Ok(mut done) = done.lock() {
            done.insert(id, result);
        }
    };
    let mut reserves = Vec::new();
    let mut others = Vec::new();
    for message in messages {
        let malformed = match worker {
            Worker::Inventory(_) => match InventoryCommand::parse(&message.body) {
                Ok(InventoryCommand::Reserve(data)) => {
                    reserves.push(usecases::Reserve {
                        message_id: message.id.clone(),
                        data,
                        trace: message.trace.clone(),
                    });
                    continue;
                }
                Ok(_) => None,
                Err(malformed) => Some(malformed),
            },
            Worker::Order(_) => InventoryOutcome::parse(&message.body).err(),
        };
        others.push((message.clone(), malformed));
    }
    let work = async {
        let bulk = async {
            if let Worker::Inventory(steps) = worker
                && !reserves.is_empty()
            {
                for (id, result) in usecases::reserve_many(steps, reserves).await {
                    finish(id, result);
                }
            }
        };
        let one_by_one = async {
            let mut results = futures::stream::iter(others)
                .map(|(message, malformed)| one(worker, message, malformed))
                .buffer_unordered(CONCURRENCY);
            while let Some((id, result)) = results.next().await {
                finish(id, result);
            }
        };
        futures::join!(bulk, one_by_one);
    };
    if tokio::time::timeout_at(stop_at.into(), work).await.is_err() {
        tracing::warn!(
            worker = worker.name(),
            "batch deadline: unfinished messages are left for redelivery"
        );
    }
    let mut done = done.into_inner().unwrap_or_default();
    messages
        .iter()
        .filter_map(|message| match done.remove(&message.id) {
            Some(Ok(())) => None,
            Some(Err(error)) => {
                tracing::warn!(
                    worker = worker.name(),
                    message_id = %message.id,
                    error = %zx_domain::cause_chain(&error),
                    "message failed; left for redelivery"
                );
                Some(message.id.clone())
            }
            None => {
                tracing::warn!(
                    worker = worker.name(),
                    message_id = %message.id,
                    "message not finished before the deadline; left for redelivery"
                );
                Some(message.id.clone())
            }
        })
        .collect()
}

/// One message, in its own trace: its log lines carry the trace id, and what it sends the
/// trace header.
async fn one(
    worker: &Worker,
    message: QueueMessage,
    malformed: Option<MalformedMessage>,
) -> (String, Result<(), MessageError>) {
    let span = tracing::info_span!(
        "message",
        message_id = %message.id,
        trace_id = zx_http::trace::trace_id(message.trace.as_ref())
    );
    let trace = message.trace.clone();
    let result = with_trace(
        trace,
        async {
            match malformed {
                Some(malformed) => dead_letter(worker, &message, malformed).await,
                None => handle(worker, &message.body).await,
            }
        }
        .instrument(span),
    )
    .await;
    (message.id, result)
}

/// A message no retry can make valid goes to the dead-letter queue now; if that fails, it is
/// left for redelivery (and the queue's redrive moves it there after its retries).
async fn dead_letter(
    worker: &Worker,
    message: &QueueMessage,
    malformed: MalformedMessage,
) -> Result<(), MessageError> {
    let reason = malformed.to_string();
    match worker
        .sender()
        .dead_letter(worker.queue(), &message.body, &reason)
        .await
    {
        Ok(()) => {
            tracing::error!(worker = worker.name(), message_id = %message.id, reason, "malformed message sent to the dead-letter queue");
            metrics::counter!(zx_domain::metrics::DEAD_LETTERS).increment(1);
            Ok(())
        }
        Err(error) => {
            tracing::warn!(worker = worker.name(), message_id = %message.id, error = %zx_domain::cause_chain(&error), "malformed message could not be dead-lettered");
            Err(MessageError::Malformed(malformed))
        }
    }
}

async fn handle(worker: &Worker, body: &str) -> Result<(), MessageError> {
    match worker {
        Worker::Inventory(steps) => usecases::handle_inventory_message(steps, body).await,
        Worker::Order(transitions) => usecases::handle_order_message(transitions, body).await,
    }
}
