//! The queue workers' step, free of Lambda and SQS types: a batch of (message id, body) in, the
//! ids of the messages that failed out (reported as `batchItemFailures`, so only those are
//! redelivered, and a message that keeps failing reaches the dead-letter queue).

use futures::StreamExt;

use crate::usecases::{self, MessageError, Saga};

/// Messages of one batch handled at once.
const CONCURRENCY: usize = 10;

/// Which worker a queue feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// `inventory-worker`: reserve and release.
    Inventory,
    /// `order-worker`: confirm or cancel on the inventory's answer.
    Order,
}

impl Worker {
    pub fn name(self) -> &'static str {
        match self {
            Self::Inventory => "inventory-worker",
            Self::Order => "order-worker",
        }
    }
}

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    pub id: String,
    pub body: String,
}

/// Handles every message of a batch (up to [`CONCURRENCY`] at once) and returns the ids of
/// those that failed; each failure is logged with its message id.
pub async fn process_batch(saga: &Saga, worker: Worker, messages: &[QueueMessage]) -> Vec<String> {
    let results: Vec<(String, Result<(), MessageError>)> =
        futures::stream::iter(messages.iter().cloned())
            .map(|message| handle(saga, worker, message))
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    results
        .into_iter()
        .filter_map(|(id, result)| match result {
            Ok(()) => None,
            Err(error) => {
                let malformed = matches!(error, MessageError::Malformed(_));
                tracing::warn!(
                    worker = worker.name(),
                    message_id = %id,
                    malformed,
                    error = %zx_domain::cause_chain(&error),
                    "message failed; left for redelivery"
                );
                Some(id)
            }
        })
        .collect()
}

async fn handle(
    saga: &Saga,
    worker: Worker,
    message: QueueMessage,
) -> (String, Result<(), MessageError>) {
    let result = match worker {
        Worker::Inventory => usecases::handle_inventory_message(saga, &message.body).await,
        Worker::Order => usecases::handle_order_message(saga, &message.body).await,
    };
    (message.id, result)
}
