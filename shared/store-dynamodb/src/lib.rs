//! DynamoDB adapters for the repository traits, and the table definitions (read from the same
//! `localstack/dynamodb/*.json` files the local stack creates tables from).

pub mod iam;
mod item;
pub mod orders;
pub mod products;
mod reservations;
pub mod schema;
pub mod sessions;
pub mod stock;
pub mod users;

pub use orders::DynamoOrderRepository;
pub use products::DynamoProductRepository;
pub use schema::{TableSpec, create_table};
pub use sessions::DynamoSessionRepository;
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

/// The outcome of a conditional write: `Some` of its output, `None` when its condition failed
/// (what that means is the caller's: a conflict, nothing to do, another turn of a loop), and any
/// other error classified by [`sdk_error`].
pub(crate) fn conditional<T, E, R>(
    operation: &'static str,
    result: Result<T, SdkError<E, R>>,
) -> Result<Option<T>, RepositoryError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(output) => Ok(Some(output)),
        Err(error)
            if error
                .as_service_error()
                .and_then(ProvideErrorMetadata::code)
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(None)
        }
        Err(error) => Err(sdk_error(operation, error)),
    }
}

/// Why DynamoDB cancelled a transaction, from its cancellation reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cancellation {
    /// A condition of ours failed: the domain outcome (conflict, insufficient stock, ...).
    ConditionFailed,
    /// Another transaction touched the same items: worth retrying at once.
    Conflict,
    /// Throttled: retry later (503).
    Transient,
    /// Anything else (a validation error, an item too large): a bug, not a retry (500).
    Permanent,
}

/// Cancellation reason codes that mean "throttled, retry later".
const TRANSIENT_REASONS: &[&str] = &["ThrottlingError", "ProvisionedThroughputExceeded"];

/// Classifies a cancelled transaction. A failed condition wins over everything else (retrying
/// cannot change it); then a conflict, then throttling; reasons `None` are the items that were
/// fine.
pub(crate) fn classify_cancellation(reasons: &[CancellationReason]) -> Cancellation {
    let codes = || reasons.iter().filter_map(CancellationReason::code);
    if codes().any(|code| code == "ConditionalCheckFailed") {
        Cancellation::ConditionFailed
    } else if codes().any(|code| code == "TransactionConflict") {
        Cancellation::Conflict
    } else if codes().any(|code| TRANSIENT_REASONS.contains(&code)) {
        Cancellation::Transient
    } else {
        Cancellation::Permanent
    }
}

/// Whether the reason at `index` is a failed condition check.
pub(crate) fn condition_failed(reasons: &[CancellationReason], index: usize) -> bool {
    reasons.get(index).and_then(CancellationReason::code) == Some("ConditionalCheckFailed")
}

/// Attempts of a transaction that collides with other transactions on the same items.
const MAX_ATTEMPTS: u32 = 6;

/// Runs a transaction, retrying (with jittered backoff) while it collides with another
/// transaction on the same items: a `TransactionConflict` is never reported as a failed
/// condition. Returns the cancellation reasons when a condition failed; a transaction still
/// colliding after every attempt, or throttled, is [`RepositoryError::Unavailable`] (503).
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
            match classify_cancellation(reasons) {
                Cancellation::ConditionFailed => return Ok(Err(reasons.to_vec())),
                Cancellation::Conflict if attempt + 1 < MAX_ATTEMPTS => {
                    backoff(attempt).await;
                    attempt += 1;
                    continue;
                }
                Cancellation::Conflict | Cancellation::Transient => {
                    return Err(RepositoryError::unavailable(
                        "DynamoDB TransactWriteItems",
                        error,
                    ));
                }
                Cancellation::Permanent => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(codes: &[&str]) -> Vec<CancellationReason> {
        codes
            .iter()
            .map(|code| CancellationReason::builder().code(*code).build())
            .collect()
    }

    #[test]
    fn cancellations_are_classified_by_their_most_telling_reason() {
        let cases = [
            (
                &["None", "ConditionalCheckFailed"][..],
                Cancellation::ConditionFailed,
            ),
            (
                &["TransactionConflict", "ConditionalCheckFailed"][..],
                Cancellation::ConditionFailed,
            ),
            (&["None", "TransactionConflict"][..], Cancellation::Conflict),
            (&["ThrottlingError", "None"][..], Cancellation::Transient),
            (
                &["ProvisionedThroughputExceeded"][..],
                Cancellation::Transient,
            ),
            (
                &["TransactionConflict", "ThrottlingError"][..],
                Cancellation::Conflict,
            ),
            (&["ValidationError", "None"][..], Cancellation::Permanent),
            (
                &["ItemCollectionSizeLimitExceeded"][..],
                Cancellation::Permanent,
            ),
            (&[][..], Cancellation::Permanent),
        ];
        for (codes, expected) in cases {
            assert_eq!(
                classify_cancellation(&reasons(codes)),
                expected,
                "{codes:?}"
            );
        }
    }
}
