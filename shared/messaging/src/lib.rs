//! The message adapter: sends outbox messages to the inventory and order queues (SQS) and the
//! `order-events` topic (SNS), behind [`zx_domain::MessageSender`]; and account notices to the
//! `account-notices` topic, behind [`zx_domain::Notifier`].

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use zx_domain::{
    AccountNotice, Destination, MessageSender, Notifier, OutboxMessage, RepositoryError,
};

/// Where each destination is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    pub inventory_queue_url: String,
    pub order_queue_url: String,
    pub order_events_topic_arn: String,
    /// The dead-letter queues of the inventory and order queues, where a worker sends a
    /// malformed message at once (optional: without them, redrive moves it after its retries).
    pub inventory_dlq_url: Option<String>,
    pub order_dlq_url: Option<String>,
}

/// The IAM actions the sender calls (`zx_app::permissions`): on the queues it sends to, and on
/// the topic. `SendMessageBatch` is authorised as `sqs:SendMessage`, `PublishBatch` as
/// `sns:Publish`.
pub const SQS_ACTIONS: &[&str] = &["sqs:SendMessage"];
pub const SNS_ACTIONS: &[&str] = &["sns:Publish"];

/// Most entries of one `SendMessageBatch` or `PublishBatch`.
const BATCH_ENTRIES: usize = 10;

/// Sends with one SQS and one SNS client per instance.
#[derive(Debug, Clone)]
pub struct AwsSender {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    destinations: Destinations,
}

impl AwsSender {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        sns: aws_sdk_sns::Client,
        destinations: Destinations,
    ) -> Self {
        Self {
            sqs,
            sns,
            destinations,
        }
    }
}

/// Codes that mean "retry later"; anything else (access denied, a missing queue or topic, an
/// invalid message) is permanent.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "Throttled",
    "ThrottledException",
    "RequestThrottled",
    "KMSThrottling",
    "KMSThrottlingException",
    "KMSDisabled",
    "KMSUnavailable",
    "ServiceUnavailableException",
    "InternalErrorException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSThrottlingException",
];

/// An entry a batch call refused: the sender's fault is permanent (an invalid message), the
/// service's is transient unless its code says otherwise.
fn entry_error(
    operation: &'static str,
    code: &str,
    message: Option<&str>,
    sender_fault: bool,
) -> RepositoryError {
    let detail = format!("{code}: {}", message.unwrap_or(""));
    if !sender_fault || TRANSIENT_CODES.contains(&code) {
        RepositoryError::unavailable(operation, detail)
    } else {
        RepositoryError::failed(operation, detail)
    }
}

/// Copies an error for each message of a batch call that failed as a whole.
fn each(error: &RepositoryError) -> RepositoryError {
    let detail = zx_domain::cause_chain(error);
    if error.is_transient() {
        RepositoryError::unavailable("send batch", detail)
    } else {
        RepositoryError::failed("send batch", detail)
    }
}

fn classify<E, R>(operation: &'static str, error: SdkError<E, R>) -> RepositoryError
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

/// The envelope's `type`, as a message attribute consumers can filter on.
fn kind(body: &str) -> &str {
    body.split("\"type\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("unknown")
}

fn type_attribute(
    body: &str,
) -> Result<aws_sdk_sns::types::MessageAttributeValue, RepositoryError> {
    aws_sdk_sns::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(kind(body))
        .build()
        .map_err(|e| RepositoryError::failed("building an SNS attribute", e))
}

/// The message's trace header as the `AWSTraceHeader` system attribute (Lambda's SQS event
/// source hands it to the consumer, which joins the trace).
fn trace_attribute(
    message: &OutboxMessage,
) -> Option<
    std::collections::HashMap<
        aws_sdk_sqs::types::MessageSystemAttributeNameForSends,
        aws_sdk_sqs::types::MessageSystemAttributeValue,
    >,
> {
    let trace = message.trace.as_deref()?;
    let value = aws_sdk_sqs::types::MessageSystemAttributeValue::builder()
        .data_type("String")
        .string_value(trace)
        .build()
        .ok()?;
    Some(std::collections::HashMap::from([(
        aws_sdk_sqs::types::MessageSystemAttributeNameForSends::AwsTraceHeader,
        value,
    )]))
}

impl AwsSender {
    /// Up to ten messages to one queue in one `SendMessageBatch`.
    async fn send_queue_chunk(
        &self,
        url: &str,
        chunk: &[OutboxMessage],
    ) -> Vec<Result<(), RepositoryError>> {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, message) in chunk.iter().enumerate() {
            match aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&message.body)
                .set_message_system_attributes(trace_attribute(message))
                .build()
            {
                Ok(entry) => entries.push(entry),
                Err(e) => {
                    let error = RepositoryError::failed("building an SQS batch entry", e);
                    return chunk.iter().map(|_| Err(each(&error))).collect();
                }
            }
        }
        match self
            .sqs
            .send_message_batch()
            .queue_url(url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(output) => (0..chunk.len())
                .map(|i| {
                    let id = i.to_string();
                    match output.failed().iter().find(|f| f.id() == id) {
                        Some(f) => Err(entry_error(
                            "SQS SendMessageBatch",
                            f.code(),
                            f.message(),
                            f.sender_fault(),
                        )),
                        None => Ok(()),
                    }
                })
                .collect(),
            Err(e) => {
                let error = classify("SQS SendMessageBatch", e);
                chunk.iter().map(|_| Err(each(&error))).collect()
            }
        }
    }

    /// Up to ten events in one `PublishBatch`.
    async fn publish_chunk(&self, chunk: &[OutboxMessage]) -> Vec<Result<(), RepositoryError>> {
        let mut entries = Vec::with_capacity(chunk.len());
        for (i, message) in chunk.iter().enumerate() {
            let entry = type_attribute(&message.body).and_then(|attribute| {
                aws_sdk_sns::types::PublishBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message(&message.body)
                    .message_attributes("type", attribute)
                    .build()
                    .map_err(|e| RepositoryError::failed("building an SNS batch entry", e))
            });
            match entry {
                Ok(entry) => entries.push(entry),
                Err(error) => return chunk.iter().map(|_| Err(each(&error))).collect(),
            }
        }
        match self
            .sns
            .publish_batch()
            .topic_arn(&self.destinations.order_events_topic_arn)
            .set_publish_batch_request_entries(Some(entries))
            .send()
            .await
        {
            Ok(output) => (0..chunk.len())
                .map(|i| {
                    let id = i.to_string();
                    match output.failed().iter().find(|f| f.id() == id) {
                        Some(f) => Err(entry_error(
                            "SNS PublishBatch",
                            f.code(),
                            f.message(),
                            f.sender_fault(),
                        )),
                        None => Ok(()),
                    }
                })
                .collect(),
            Err(e) => {
                let error = classify("SNS PublishBatch", e);
                chunk.iter().map(|_| Err(each(&error))).collect()
            }
        }
    }

    fn queue_url(&self, destination: Destination) -> Option<&str> {
        match destination {
            Destination::InventoryQueue => Some(&self.destinations.inventory_queue_url),
            Destination::OrderQueue => Some(&self.destinations.order_queue_url),
            Destination::OrderEvents => None,
        }
    }
}

/// Account notices to the `account-notices` topic, for the shop's mailer (one SNS client per
/// instance; only users-update holds one).
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    sns: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(sns: aws_sdk_sns::Client, topic_arn: String) -> Self {
        Self { sns, topic_arn }
    }
}

/// The JSON a notice is published as: `type`, `to`, and for a code `userId`, `code` and
/// `expiresAt` (RFC 3339).
pub fn notice_body(notice: &AccountNotice) -> String {
    let body = match notice {
        AccountNotice::EmailChangeCode {
            to,
            user,
            code,
            expires_at,
        } => serde_json::json!({
            "type": notice.kind(),
            "to": to.as_str(),
            "userId": user.as_str(),
            "code": code.expose(),
            "expiresAt": expires_at.to_rfc3339(),
        }),
        AccountNotice::EmailInUse { to } => serde_json::json!({
            "type": notice.kind(),
            "to": to.as_str(),
        }),
    };
    body.to_string()
}

#[async_trait]
impl Notifier for SnsNotifier {
    #[tracing::instrument(skip_all, fields(kind = notice.kind()))]
    async fn notify(&self, notice: &AccountNotice) -> Result<(), RepositoryError> {
        let attribute = aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(notice.kind())
            .build()
            .map_err(|e| RepositoryError::failed("building an SNS attribute", e))?;
        self.sns
            .publish()
            .topic_arn(&self.topic_arn)
            .message(notice_body(notice))
            .message_attributes("type", attribute)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("SNS Publish", e))
    }
}

#[async_trait]
impl MessageSender for AwsSender {
    #[tracing::instrument(skip_all, fields(message_id = %message.id, destination = message.destination.as_str()))]
    async fn send(&self, message: &OutboxMessage) -> Result<(), RepositoryError> {
        match message.destination {
            Destination::InventoryQueue | Destination::OrderQueue => {
                let url = if message.destination == Destination::InventoryQueue {
                    &self.destinations.inventory_queue_url
                } else {
                    &self.destinations.order_queue_url
                };
                self.sqs
                    .send_message()
                    .queue_url(url)
                    .message_body(&message.body)
                    .set_message_system_attributes(trace_attribute(message))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("SQS SendMessage", e))
            }
            Destination::OrderEvents => {
                let attribute = type_attribute(&message.body)?;
                self.sns
                    .publish()
                    .topic_arn(&self.destinations.order_events_topic_arn)
                    .message(&message.body)
                    .message_attributes("type", attribute)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("SNS Publish", e))
            }
        }
    }

    /// `SendMessage` to the dead-letter queue of `source`, the reason as a message attribute.
    #[tracing::instrument(skip_all, fields(source = source.as_str()))]
    async fn dead_letter(
        &self,
        source: Destination,
        body: &str,
        reason: &str,
    ) -> Result<(), RepositoryError> {
        let url = match source {
            Destination::InventoryQueue => self.destinations.inventory_dlq_url.as_deref(),
            Destination::OrderQueue => self.destinations.order_dlq_url.as_deref(),
            Destination::OrderEvents => None,
        }
        .ok_or_else(|| {
            RepositoryError::failed(
                "SQS SendMessage",
                format!("no dead-letter queue for {}", source.as_str()),
            )
        })?;
        let reason: String = reason.chars().take(256).collect();
        let attribute = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason)
            .build()
            .map_err(|e| RepositoryError::failed("building an SQS attribute", e))?;
        self.sqs
            .send_message()
            .queue_url(url)
            .message_body(body)
            .message_attributes("reason", attribute)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("SQS SendMessage", e))
    }

    /// Groups by destination and sends each group in batches of ten, all at once.
    #[tracing::instrument(skip_all, fields(messages = messages.len()))]
    async fn send_batch(&self, messages: &[OutboxMessage]) -> Vec<Result<(), RepositoryError>> {
        let mut results: Vec<Option<Result<(), RepositoryError>>> =
            messages.iter().map(|_| None).collect();
        let mut calls = Vec::new();
        for destination in [
            Destination::InventoryQueue,
            Destination::OrderQueue,
            Destination::OrderEvents,
        ] {
            let indexes: Vec<usize> = (0..messages.len())
                .filter(|&i| {
                    messages
                        .get(i)
                        .is_some_and(|m| m.destination == destination)
                })
                .collect();
            for chunk in indexes.chunks(BATCH_ENTRIES) {
                let batch: Vec<OutboxMessage> = chunk
                    .iter()
                    .filter_map(|&i| messages.get(i).cloned())
                    .collect();
                let chunk = chunk.to_vec();
                calls.push(async move {
                    let outcome = match self.queue_url(destination) {
                        Some(url) => self.send_queue_chunk(url, &batch).await,
                        None => self.publish_chunk(&batch).await,
                    };
                    (chunk, outcome)
                });
            }
        }
        for (chunk, outcome) in futures::future::join_all(calls).await {
            for (i, result) in chunk.into_iter().zip(outcome) {
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(result);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(RepositoryError::failed("send batch", "not sent"))))
            .collect()
    }
}

#[cfg(test)]
mod classification_tests {
    use super::*;

    #[test]
    fn throttling_is_transient_and_a_sender_fault_is_permanent() {
        for code in [
            "Throttled",
            "ThrottlingException",
            "KMSThrottling",
            "InternalError",
        ] {
            assert!(entry_error("x", code, None, true).is_transient(), "{code}");
        }
        assert!(!entry_error("x", "InvalidParameter", Some("bad"), true).is_transient());
        assert!(entry_error("x", "Whatever", None, false).is_transient());
    }
}

#[cfg(test)]
mod iam_tests {
    #[test]
    fn the_declared_actions_are_the_calls() {
        let code: String = include_str!("lib.rs")
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        for (call, called) in [
            (".send_message()", true),
            (".publish()", true),
            (".send_message_batch()", true),
            (".publish_batch()", true),
            (".delete_message()", false),
        ] {
            assert_eq!(code.contains(call), called, "{call}");
        }
        assert_eq!(super::SQS_ACTIONS, ["sqs:SendMessage"]);
        assert_eq!(super::SNS_ACTIONS, ["sns:Publish"]);
    }
}

#[cfg(test)]
mod notice_tests {
    use zx_domain::{AccountNotice, Email, OneTimeCode, Timestamp, UserId};

    #[test]
    fn a_code_goes_only_to_the_new_address_and_an_in_use_notice_carries_none() {
        let to = Email::parse("new@example.com").unwrap();
        let code = AccountNotice::EmailChangeCode {
            to: to.clone(),
            user: UserId::generate(),
            code: OneTimeCode::new("c0de".into()),
            expires_at: Timestamp::now(),
        };
        let body: serde_json::Value = serde_json::from_str(&super::notice_body(&code)).unwrap();
        assert_eq!(body["type"], "account.email_change_code");
        assert_eq!(body["to"], "new@example.com");
        assert_eq!(body["code"], "c0de");
        assert!(
            !format!("{code:?}").contains("c0de"),
            "a code is never logged"
        );
        let in_use = AccountNotice::EmailInUse { to };
        let body: serde_json::Value = serde_json::from_str(&super::notice_body(&in_use)).unwrap();
        assert_eq!(body["type"], "account.email_in_use");
        assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    }
}
