//! One error type for every handler, rendered as RFC 9457 `application/problem+json`.
//! Internal errors are logged with their whole cause chain and answered with the request id only.

use std::error::Error as StdError;
use std::time::Duration;

use lambda_http::{Body, Response};
use serde::Serialize;
use zx_domain::{FieldError, RepositoryError, UniqueField, ValidationErrors};

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or fields are missing or invalid.
    #[error("{detail}")]
    BadRequest {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 401: no valid credentials. `challenge` is the `WWW-Authenticate` value (RFC 6750).
    #[error("{detail}")]
    Unauthorized {
        detail: String,
        challenge: &'static str,
    },
    /// 403: authenticated but not allowed.
    #[error("{detail}")]
    Forbidden { detail: String },
    /// 404: no such resource, or not one the caller may see.
    #[error("{detail}")]
    NotFound { detail: String },
    /// 409: conflicts with the current state (a taken e-mail, a concurrent change).
    #[error("{detail}")]
    Conflict {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 409 `out-of-stock`: the product is known to be sold out; nothing was stored.
    #[error("product {product_id} is sold out")]
    OutOfStock { product_id: String },
    /// 412: the `If-Match` precondition no longer holds (the resource changed).
    #[error("{detail}")]
    PreconditionFailed { detail: String },
    /// 428: the change needs an `If-Match` precondition.
    #[error("{detail}")]
    PreconditionRequired { detail: String },
    /// 413: body larger than the limit.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 415: body is not `application/json`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 429: too many requests from this client: `limit` a minute, the window resets in
    /// `retry_after` (sent as `Retry-After` and `RateLimit-*`).
    #[error("too many requests")]
    TooManyRequests { retry_after: Duration, limit: u32 },
    /// 429 `too-many-attempts`: too many wrong passwords for one account (whatever the client's
    /// address, and the same whether or not the account exists); try again after `retry_after`.
    #[error("too many failed password attempts for this account; try again later")]
    AccountLocked { retry_after: Duration },
    /// 503: a dependency is unavailable; the client may retry.
    #[error("{detail}")]
    Unavailable {
        detail: String,
        retry_after: Duration,
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// 500: a bug or an unexpected failure. The source is logged, never sent.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::BadRequest {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let error = FieldError::new(field, message);
        Self::BadRequest {
            detail: format!("invalid field {error}"),
            errors: vec![error],
        }
    }

    /// 401 for a request without a bearer token (RFC 6750 §3: no error code).
    pub fn missing_credentials() -> Self {
        Self::Unauthorized {
            detail: "a bearer token is required".into(),
            challenge: r#"Bearer realm="zhixuan""#,
        }
    }

    /// 401 for a bearer token that is malformed, expired, badly signed or not for us.
    pub fn invalid_token() -> Self {
        Self::Unauthorized {
            detail: "the bearer token is invalid or expired".into(),
            challenge: r#"Bearer realm="zhixuan", error="invalid_token""#,
        }
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::Forbidden {
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::NotFound {
            detail: detail.into(),
        }
    }

    pub fn internal(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        Self::Internal(source.into())
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest { .. } => 400,
            Self::Unauthorized { .. } => 401,
            Self::Forbidden { .. } => 403,
            Self::NotFound { .. } => 404,
            Self::Conflict { .. } | Self::OutOfStock { .. } => 409,
            Self::PreconditionFailed { .. } => 412,
            Self::PreconditionRequired { .. } => 428,
            Self::PayloadTooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyRequests { .. } | Self::AccountLocked { .. } => 429,
            Self::Unavailable { .. } => 503,
            Self::Internal(_) => 500,
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "Bad Request",
            Self::Unauthorized { .. } => "Unauthorized",
            Self::Forbidden { .. } => "Forbidden",
            Self::NotFound { .. } => "Not Found",
            Self::Conflict { .. } | Self::OutOfStock { .. } => "Conflict",
            Self::PreconditionFailed { .. } => "Precondition Failed",
            Self::PreconditionRequired { .. } => "Precondition Required",
            Self::PayloadTooLarge { .. } => "Payload Too Large",
            Self::UnsupportedMediaType => "Unsupported Media Type",
            Self::TooManyRequests { .. } | Self::AccountLocked { .. } => "Too Many Requests",
            Self::Unavailable { .. } => "Service Unavailable",
            Self::Internal(_) => "Internal Server Error",
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } => "bad-request",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Forbidden { .. } => "forbidden",
            Self::NotFound { .. } => "not-found",
            Self::Conflict { .. } => "conflict",
            Self::OutOfStock { .. } => "out-of-stock",
            Self::PreconditionFailed { .. } => "precondition-failed",
            Self::PreconditionRequired { .. } => "precondition-required",
            Self::PayloadTooLarge { .. } => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::TooManyRequests { .. } => "too-many-requests",
            Self::AccountLocked { .. } => "too-many-attempts",
            Self::Unavailable { .. } => "service-unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::TooManyRequests { retry_after, .. }
            | Self::AccountLocked { retry_after }
            | Self::Unavailable { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The whole cause chain, for logs.
    pub fn cause_chain(&self) -> String {
        zx_domain::cause_chain(self)
    }

    /// The problem+json response. A 500 carries only the request id. Other bodies carry no
    /// per-request data, so equal errors give byte-identical bodies (a login failure says
    /// nothing about whether the e-mail exists).
    pub fn to_response(&self, request_id: &str) -> Response<Body> {
        let detail = match self {
            Self::Internal(_) => format!("unexpected error; quote request id {request_id}"),
            other => other.to_string(),
        };
        let errors = match self {
            Self::BadRequest { errors, .. } | Self::Conflict { errors, .. } => errors.as_slice(),
            _ => &[],
        };
        let problem = Problem {
            type_: format!("https://zhixuan.dev/problems/{}", self.slug()),
            title: self.title(),
            status: self.status(),
            detail,
            errors: (!errors.is_empty()).then_some(errors),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut builder = Response::builder()
            .status(self.status())
            .header("content-type", PROBLEM_JSON);
        if let Some(after) = self.retry_after() {
            // Rounded up: a client that waits what it is told is never early.
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            builder = builder.header("retry-after", seconds.max(1).to_string());
        }
        if let Self::Unauthorized { challenge, .. } = self {
            builder = builder.header("www-authenticate", *challenge);
        }
        if let Self::TooManyRequests { retry_after, limit } = self {
            builder = builder
                .header("ratelimit-limit", *limit)
                .header("ratelimit-remaining", 0)
                .header("ratelimit-reset", retry_after.as_secs().max(1));
        }
        builder
            .body(Body::Binary(body))
            .unwrap_or_else(|_| Response::new(Body::Empty))
    }
}

/// An RFC 9457 problem: every error this API answers, as `application/problem+json`.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub struct Problem<'a> {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    #[schema(examples("https://zhixuan.dev/problems/bad-request"))]
    type_: String,
    title: &'static str,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for people. A 500 carries only the request id.
    detail: String,
    /// The invalid fields (400) or taken values (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<FieldError>, required = false)]
    errors: Option<&'a [FieldError]>,
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::BadRequest {
            detail: errors.to_string(),
            errors: errors.0,
        }
    }
}

impl From<RepositoryError> for ApiError {
    fn from(error: RepositoryError) -> Self {
        match error {
            RepositoryError::Conflict(field) => {
                let message = match field {
                    UniqueField::Email => "is already registered",
                    UniqueField::Username => "is already taken",
                };
                Self::Conflict {
                    detail: format!("{} {message}", field.as_str()),
                    errors: vec![FieldError::new(field.as_str(), message)],
                }
            }
            RepositoryError::ConcurrentUpdate => Self::Conflict {
                detail: "the resource was changed by another request; read it again and retry"
                    .into(),
                errors: Vec::new(),
            },
            RepositoryError::NotFound => Self::not_found("no such resource"),
            RepositoryError::InsufficientStock => Self::Conflict {
                detail: "available stock cannot go below zero".into(),
                errors: Vec::new(),
            },
            RepositoryError::StockLimitExceeded => Self::Conflict {
                detail: format!(
                    "available stock cannot exceed {}",
                    zx_domain::Stock::MAX_UNITS
                ),
                errors: Vec::new(),
            },
            RepositoryError::IdempotencyKeyReused => Self::Conflict {
                detail: "this Idempotency-Key was already used for another request".into(),
                errors: vec![FieldError::new(
                    "Idempotency-Key",
                    "was already used for another request; use a new key",
                )],
            },
            RepositoryError::PreconditionFailed => Self::PreconditionFailed {
                detail:
                    "the resource changed since it was read: read it again (a new ETag) and retry"
                        .into(),
            },
            RepositoryError::Unavailable { .. } => Self::Unavailable {
                detail: "the data store is unavailable; retry shortly".into(),
                retry_after: Duration::from_secs(1),
                source: Some(Box::new(error)),
            },
            RepositoryError::Failed { .. } | RepositoryError::Corrupt(_) => Self::internal(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_json(response: &Response<Body>) -> serde_json::Value {
        serde_json::from_slice(response.body().as_ref()).unwrap()
    }

    #[test]
    fn internal_errors_never_leak() {
        let error = ApiError::internal("password_hash column is null at db-7.internal");
        let response = error.to_response("req-123");
        assert_eq!(response.status(), 500);
        let body = body_json(&response);
        assert_eq!(body["detail"], "unexpected error; quote request id req-123");
        assert!(!body.to_string().contains("db-7"));
        assert!(
            error.cause_chain().contains("db-7"),
            "the log keeps the cause"
        );
    }

    #[test]
    fn field_errors_name_the_field() {
        let response =
            ApiError::invalid_field("password", "must be at most 72 bytes").to_response("r");
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
        let body = body_json(&response);
        assert_eq!(body["errors"][0]["field"], "password");
        assert_eq!(body["status"], 400);
    }

    #[test]
    fn permanent_store_faults_are_500_and_transient_ones_503() {
        let failed = ApiError::from(RepositoryError::failed(
            "DynamoDB GetItem",
            "AccessDeniedException: arn:aws:iam::123:role/x",
        ));
        let response = failed.to_response("req-9");
        assert_eq!(response.status(), 500);
        assert!(response.headers().get("retry-after").is_none());
        assert!(!body_json(&response).to_string().contains("AccessDenied"));
        let transient = ApiError::from(RepositoryError::unavailable("DynamoDB GetItem", "timeout"));
        let response = transient.to_response("req-9");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "1");
    }

    #[test]
    fn unauthorized_carries_an_rfc6750_challenge() {
        let response = ApiError::invalid_token().to_response("r");
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="zhixuan", error="invalid_token""#
        );
        let response = ApiError::missing_credentials().to_response("r");
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer realm="zhixuan""#
        );
    }

    #[test]
    fn conflicts_and_retry_after() {
        let response =
            ApiError::from(RepositoryError::Conflict(UniqueField::Email)).to_response("r");
        assert_eq!(response.status(), 409);
        assert_eq!(body_json(&response)["errors"][0]["field"], "email");
        let response = ApiError::TooManyRequests {
            retry_after: Duration::from_secs(30),
            limit: 5,
        }
        .to_response("r");
        assert_eq!(response.headers()["retry-after"], "30");
        assert_eq!(response.headers()["ratelimit-limit"], "5");
        assert_eq!(response.headers()["ratelimit-remaining"], "0");
        assert_eq!(response.headers()["ratelimit-reset"], "30");
    }
}
