//! The message adapter: sends outbox messages to the inventory and order queues (SQS) and the
//! `order-events` topic (SNS), behind [`zx_domain::MessageSender`].

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use zx_domain::{Destination, MessageSender, OutboxMessage, RepositoryError};

/// Where each destination is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    pub inventory_queue_url: String,
    pub order_queue_url: String,
    pub order_events_topic_arn: String,
}

/// The IAM actions the sender calls (`zx_app::permissions`): on the queues it sends to, and on
/// the topic.
pub const SQS_ACTIONS: &[&str] = &["sqs:SendMessage"];
pub const SNS_ACTIONS: &[&str] = &["sns:Publish"];

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
    "RequestThrottled",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSThrottlingException",
];

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
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| classify("SQS SendMessage", e))
            }
            Destination::OrderEvents => {
                let attribute = aws_sdk_sns::types::MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value(kind(&message.body))
                    .build()
                    .map_err(|e| RepositoryError::failed("building an SNS attribute", e))?;
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
            (".send_message_batch()", false),
            (".publish_batch()", false),
        ] {
            assert_eq!(code.contains(call), called, "{call}");
        }
        assert_eq!(super::SQS_ACTIONS, ["sqs:SendMessage"]);
        assert_eq!(super::SNS_ACTIONS, ["sns:Publish"]);
    }
}
