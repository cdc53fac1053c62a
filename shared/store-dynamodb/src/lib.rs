//! DynamoDB adapters for the repository traits, and the table definitions (read from the same
//! `localstack/dynamodb/*.json` files the local stack creates tables from).

pub mod products;
pub mod schema;
pub mod users;

pub use products::DynamoProductRepository;
pub use schema::{TableSpec, create_table};
pub use users::DynamoUserRepository;

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::CancellationReason;
use zx_domain::RepositoryError;

/// Error codes of DynamoDB (and of AWS services generally) that mean "retry later".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "InternalFailure",
    "ServiceUnavailable",
    "TransactionInProgressException",
    "TransactionConflictException",
];

/// Classifies an SDK error: timeouts, connection failures, broken responses, throttling and
/// the service's own 5xx are transient ([`RepositoryError::Unavailable`], a 503 at the edge);
/// everything else (access denied, a missing table, a validation error, a request that cannot
/// be built) is permanent ([`RepositoryError::Failed`], a 500).
pub(crate) fn sdk_error<E, R>(operation: &'static str, error: SdkError<E, R>) -> RepositoryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| TRANSIENT_CODES.contains(&code)),
        _ => false,
    };
    if transient {
        RepositoryError::unavailable(operation, error)
    } else {
        RepositoryError::failed(operation, error)
    }
}

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

/// Attempts of a transaction that collides with other transactions on the same items.
const MAX_ATTEMPTS: u32 = 6;

/// Runs a transaction, retrying (with jittered backoff) while it collides with another
/// transaction on the same items: a `TransactionConflict` is never reported as a failed
/// condition. Returns the cancellation reasons when a condition failed.
pub(crate) async fn transact(
    client: &aws_sdk_dynamodb::Client,
    items: Vec<aws_sdk_dynamodb::types::TransactWriteItem>,
) -> Result<Result<(), Vec<CancellationReason>>, RepositoryError> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
    let mut attempt = 0;
    loop {
        let result = client
            .transact_write_items()
            .set_transact_items(Some(items.clone()))
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(Ok(())),
            Err(error) => error,
        };
        if let SdkError::ServiceError(service) = &error
            && let TransactWriteItemsError::TransactionCanceledException(cancelled) = service.err()
        {
            let reasons = cancelled.cancellation_reasons();
            if is_transaction_conflict(reasons) && attempt + 1 < MAX_ATTEMPTS {
                backoff(attempt).await;
                attempt += 1;
                continue;
            }
            if (0..reasons.len()).any(|i| condition_failed(reasons, i)) {
                return Ok(Err(reasons.to_vec()));
            }
        }
        return Err(sdk_error("DynamoDB TransactWriteItems", error));
    }
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
pub async fn ping(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), RepositoryError> {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map(|_| ())
        .map_err(|e| sdk_error("DynamoDB DescribeTable", e))
}
