//! DynamoDB adapters for the repository traits, and the table definitions (read from the same
//! `localstack/dynamodb/*.json` files the local stack creates tables from).

pub mod products;
pub mod schema;
pub mod users;

pub use products::DynamoProductRepository;
pub use schema::{TableSpec, create_table};
pub use users::DynamoUserRepository;

use aws_sdk_dynamodb::types::CancellationReason;

/// Whether any cancellation reason of a transaction is a concurrent-transaction conflict (worth
/// retrying) rather than a failed condition.
pub(crate) fn is_transaction_conflict(reasons: &[CancellationReason]) -> bool {
    reasons
        .iter()
        .any(|r| r.code() == Some("TransactionConflict"))
}

/// Whether the reason at `index` is a failed condition check.
pub(crate) fn condition_failed(reasons: &[CancellationReason], index: usize) -> bool {
    reasons.get(index).and_then(CancellationReason::code) == Some("ConditionalCheckFailed")
}

/// A short, jittered pause before retrying a conflicting transaction (attempt 0, 1, ...).
pub(crate) async fn backoff(attempt: u32) {
    let jitter = u64::from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() % 20)
            .unwrap_or(7),
    );
    let millis = (10u64 << attempt.min(4)) + jitter;
    tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
}

/// Checks the table answers (for health checks).
pub async fn ping(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), zx_domain::RepositoryError> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| zx_domain::RepositoryError::unavailable("DynamoDB DescribeTable", e))
}
