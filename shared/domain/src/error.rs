//! Typed errors shared by the domain and the repository adapters.

use std::fmt;

/// One invalid input field: which one and why, in words a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every invalid field of one input, collected so a client can fix them all at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }

    /// Records the error of `result` (renamed to `field`) and returns its value, if any.
    pub fn check<T>(&mut self, field: &str, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.push(FieldError::new(field, message));
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// A field that must be unique across users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    Email,
    Username,
}

impl UniqueField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Username => "username",
        }
    }
}

/// What a repository operation can fail with, whatever the backend.
#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    /// A unique value is already held by another record.
    #[error("{} is already taken", .0.as_str())]
    Conflict(UniqueField),
    /// The record changed (or vanished) since it was read: the caller's view is stale.
    #[error("the record was changed concurrently")]
    ConcurrentUpdate,
    /// The record does not exist (or is deleted).
    #[error("the record does not exist")]
    NotFound,
    /// The change would take available stock below zero.
    #[error("not enough stock")]
    InsufficientStock,
    /// The change would take available stock above [`crate::Stock::MAX_UNITS`].
    #[error("stock would exceed the maximum")]
    StockLimitExceeded,
    /// The caller's view of the record (an `If-Match` tag) is stale: nothing changed.
    #[error("the record changed since it was read")]
    PreconditionFailed,
    /// An idempotency key already named another change (another product or another body).
    #[error("the idempotency key was already used for another request")]
    IdempotencyKeyReused,
    /// A transient fault: the store could not be reached in time, throttled the call or is
    /// temporarily unable to serve it. Retrying later may succeed.
    #[error("{operation} failed (transient)")]
    Unavailable {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A permanent fault: the store refused the operation for a reason retrying does not fix
    /// (access denied, a missing table, an invalid request). A bug or a misconfiguration.
    #[error("{operation} failed")]
    Failed {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored record does not parse into a domain value.
    #[error("stored record is invalid: {0}")]
    Corrupt(String),
}

impl RepositoryError {
    /// A fault that retrying may fix (see [`RepositoryError::Unavailable`]).
    pub fn unavailable(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            operation,
            source: source.into(),
        }
    }

    /// `value` as the JSON an adapter stores (lines, history); failing is permanent
    /// (`operation` names what was being serialised).
    pub fn json<T: serde::Serialize>(value: &T, operation: &'static str) -> Result<String, Self> {
        serde_json::to_string(value).map_err(|e| Self::failed(operation, e))
    }

    /// A fault that retrying does not fix (see [`RepositoryError::Failed`]).
    pub fn failed(
        operation: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Failed {
            operation,
            source: source.into(),
        }
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// An error and all its sources, `outer: inner: innermost`, for logs and start-up messages.
pub fn cause_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}
