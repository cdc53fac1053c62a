//! What Lambda's SQS event source mappings and EventBridge schedules do, without AWS: pollers
//! that receive batches from the queues of `template.yaml`'s SQS events (their `BatchSize` and
//! `MaximumBatchingWindowInSeconds`), invoke the worker's handler (built by the same builder as
//! the deployed function) with an `SqsEvent`, delete the records it did not report in
//! `batchItemFailures` and leave those for redelivery after the queue's visibility timeout (so
//! a message that keeps failing reaches the dead-letter queue by the queue's redrive policy);
//! and a timer that runs `outbox-relay` at its `rate(...)`. One log line per batch.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use serde_json::json;
use serde_yaml::Value;
use tokio::task::JoinHandle;
use zx_app::Services;
use zx_app::workers::{ScheduledHandler, SqsHandler};

use crate::TemplateError;

/// An SQS event source of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSource {
    /// The worker's binary name.
    pub function: String,
    /// The environment variable holding the queue's URL (`!Ref` of the queue in `Globals`).
    pub queue_var: String,
    pub batch_size: i32,
    pub batching_window: Duration,
}

/// A scheduled function of the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub function: String,
    pub every: Duration,
}

fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

/// The logical id inside `!GetAtt Id.Arn` / `!Ref Id`.
fn tagged_target(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(tagged) => tagged
            .value
            .as_str()
            .map(|s| s.split('.').next().unwrap_or(s).to_owned()),
        _ => None,
    }
}

/// `rate(N minute[s]|second[s]|hour[s])`.
fn parse_rate(text: &str) -> Option<Duration> {
    let inner = text.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let mut parts = inner.split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    let unit = parts.next()?;
    let seconds = match unit.trim_end_matches('s') {
        "second" => n,
        "minute" => n.checked_mul(60)?,
        "hour" => n.checked_mul(3600)?,
        _ => return None,
    };
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// The SQS event sources and schedules of `template.yaml`.
pub fn sources_from_template(
    yaml: &str,
) -> Result<(Vec<QueueSource>, Vec<Schedule>), TemplateError> {
    let template: Value = serde_yaml::from_str(yaml)?;
    let invalid = |m: String| TemplateError::Invalid(m);
    let resources = template
        .get("Resources")
        .and_then(Value::as_mapping)
        .ok_or_else(|| invalid("no Resources".into()))?;
    let globals = get(
        &template,
        &["Globals", "Function", "Environment", "Variables"],
    )
    .and_then(Value::as_mapping);
    let var_of_queue = |queue: &str| -> Option<String> {
        globals?
            .iter()
            .find(|(_, value)| tagged_target(value).as_deref() == Some(queue))
            .and_then(|(name, _)| name.as_str().map(str::to_owned))
    };
    let (mut queues, mut schedules) = (Vec::new(), Vec::new());
    for (logical_id, resource) in resources {
        if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
            continue;
        }
        let logical_id = logical_id.as_str().unwrap_or_default();
        let Some(events) = get(resource, &["Properties", "Events"]).and_then(Value::as_mapping)
        else {
            continue;
        };
        let binary = || {
            get(resource, &["Metadata", "BuildProperties", "Binary"])
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| invalid(format!("{logical_id} has no BuildProperties.Binary")))
        };
        for (_, event) in events {
            let props = event.get("Properties");
            match event.get("Type").and_then(Value::as_str) {
                Some("SQS") => {
                    let queue = props
                        .and_then(|p| p.get("Queue"))
                        .and_then(tagged_target)
                        .ok_or_else(|| invalid(format!("{logical_id}: SQS event without Queue")))?;
                    let queue_var = var_of_queue(&queue).ok_or_else(|| {
                        invalid(format!("no Globals variable is !Ref {queue} (its URL)"))
                    })?;
                    let number = |name: &str, default: u64| {
                        props
                            .and_then(|p| p.get(name))
                            .and_then(Value::as_u64)
                            .unwrap_or(default)
                    };
                    queues.push(QueueSource {
                        function: binary()?,
                        queue_var,
                        batch_size: i32::try_from(number("BatchSize", 10).clamp(1, 10))
                            .unwrap_or(10),
                        batching_window: Duration::from_secs(
                            number("MaximumBatchingWindowInSeconds", 0).min(300),
                        ),
                    });
                }
                Some("Schedule" | "ScheduleV2") => {
                    let expression = props
                        .and_then(|p| p.get("Schedule").or_else(|| p.get("ScheduleExpression")))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let every = parse_rate(expression).ok_or_else(|| {
                        invalid(format!(
                            "{logical_id}: only rate(...) schedules run locally"
                        ))
                    })?;
                    schedules.push(Schedule {
                        function: binary()?,
                        every,
                    });
                }
                _ => {}
            }
        }
    }
    Ok((queues, schedules))
}

/// The non-HTTP functions, built once as at their cold starts.
#[derive(Clone)]
pub struct Workers {
    sqs: Vec<(&'static str, SqsHandler)>,
    relay: ScheduledHandler,
}

impl Workers {
    pub fn new(services: &Services) -> Result<Self, crate::StartError> {
        let sqs = zx_app::workers::SQS_FUNCTIONS
            .iter()
            .map(|function| {
                (function.build)(services)
                    .map(|handler| (function.name, handler))
                    .map_err(|source| crate::StartError {
                        function: function.name,
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        let relay =
            zx_app::workers::outbox_relay(services).map_err(|source| crate::StartError {
                function: "outbox-relay",
                source,
            })?;
        Ok(Self { sqs, relay })
    }

    /// These workers with each SQS handler replaced by `sqs(name, handler)` and the relay by
    /// `relay(handler)`: the fault harness's seam (a worker killed after its store write and
    /// before its reply, a relay killed mid-run).
    pub fn wrapped(
        self,
        sqs: impl Fn(&'static str, SqsHandler) -> SqsHandler,
        relay: impl FnOnce(ScheduledHandler) -> ScheduledHandler,
    ) -> Self {
        Self {
            sqs: self
                .sqs
                .into_iter()
                .map(|(name, handler)| (name, sqs(name, handler)))
                .collect(),
            relay: relay(self.relay),
        }
    }

    /// The handler of the SQS function `binary`.
    pub fn sqs_handler(&self, binary: &str) -> Option<&SqsHandler> {
        self.sqs
            .iter()
            .find(|(name, _)| *name == binary)
            .map(|(_, handler)| handler)
    }

    /// One run of `outbox-relay`, as its schedule would start it (with the function's
    /// timeout, [`RELAY_TIMEOUT`]).
    pub async fn run_relay(&self) -> zx_orders::usecases::RelayReport {
        self.run_relay_until(std::time::Instant::now() + RELAY_TIMEOUT)
            .await
    }

    /// One run of `outbox-relay` that must end by `deadline`.
    pub async fn run_relay_until(
        &self,
        deadline: std::time::Instant,
    ) -> zx_orders::usecases::RelayReport {
        let report = (self.relay)(deadline).await;
        zx_http::emf::flush(&format!("local-{}", uuid::Uuid::new_v4()), "");
        report
    }
}

/// The workers' timeout in `template.yaml` (`Globals`): each batch must be answered by then.
pub const WORKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The relay function's timeout in `template.yaml`.
pub const RELAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Running pollers and timers; dropping this stops them.
pub struct Pollers {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Pollers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Concurrent batches per queue (Lambda starts five pollers per standard-queue mapping).
pub const POLLERS_PER_QUEUE: usize = 3;

impl Pollers {
    /// Starts polling every queue source (its URL from `services`) and every schedule.
    pub fn start(
        workers: &Workers,
        services: &Services,
        sqs: aws_sdk_sqs::Client,
        queues: &[QueueSource],
        schedules: &[Schedule],
    ) -> Result<Self, String> {
        let destinations = services
            .destinations
            .clone()
            .ok_or("the queues are not configured (INVENTORY_QUEUE_URL, ORDER_QUEUE_URL)")?;
        let mut tasks = Vec::new();
        for source in queues {
            let url = match source.queue_var.as_str() {
                "INVENTORY_QUEUE_URL" => destinations.inventory_queue_url.clone(),
                "ORDER_QUEUE_URL" => destinations.order_queue_url.clone(),
                other => return Err(format!("no local queue for {other}")),
            };
            let handler = workers
                .sqs_handler(&source.function)
                .ok_or_else(|| format!("no SQS function {}", source.function))?
                .clone();
            for _ in 0..POLLERS_PER_QUEUE {
                tasks.push(tokio::spawn(poll(
                    sqs.clone(),
                    url.clone(),
                    source.clone(),
                    handler.clone(),
                )));
            }
        }
        for schedule in schedules {
            if schedule.function != "outbox-relay" {
                return Err(format!("no scheduled function {}", schedule.function));
            }
            let workers = workers.clone();
            let every = schedule.every;
            tasks.push(tokio::spawn(async move {
                let mut timer = tokio::time::interval(every);
                timer.tick().await;
                loop {
                    timer.tick().await;
                    workers.run_relay().await;
                }
            }));
        }
        Ok(Self { tasks })
    }
}

/// The `SqsEvent` Lambda would deliver for these messages.
pub fn sqs_event(
    queue_arn: &str,
    messages: &[aws_sdk_sqs::types::Message],
) -> Result<SqsEvent, serde_json::Error> {
    let records: Vec<_> = messages
        .iter()
        .map(|m| {
            json!({
                "messageId": m.message_id(),
                "receiptHandle": m.receipt_handle(),
                "body": m.body(),
                "md5OfBody": m.md5_of_body(),
                "attributes": m.attributes().map(|a| {
                    a.iter().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect::<std::collections::HashMap<_, _>>()
                }).unwrap_or_default(),
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records }))
}

async fn poll(sqs: aws_sdk_sqs::Client, url: String, source: QueueSource, handler: SqsHandler) {
    let arn = format!(
        "arn:aws:sqs:us-east-1:000000000000:{}",
        url.rsplit('/').next().unwrap_or_default()
    );
    loop {
        let started = Instant::now();
        let mut batch: Vec<aws_sdk_sqs::types::Message> = Vec::new();
        // Gather up to the batch size, for at most the batching window (long polls of 1 s).
        loop {
            let want = source.batch_size - i32::try_from(batch.len()).unwrap_or(0);
            let received = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(want.clamp(1, 10))
                .wait_time_seconds(1)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await;
            match received {
                Ok(output) => batch.extend(output.messages.unwrap_or_default()),
                Err(error) => {
                    tracing::warn!(queue = %url, error = %zx_domain::cause_chain(&error), "receive failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            let full = batch.len() >= usize::try_from(source.batch_size).unwrap_or(10);
            if full || started.elapsed() >= source.batching_window || batch.is_empty() {
                break;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let invoked = Instant::now();
        let event = match sqs_event(&arn, &batch) {
            Ok(event) => event,
            Err(error) => {
                // Nothing is deleted: the batch comes back after the visibility timeout.
                tracing::error!(function = %source.function, %error, "cannot build the SQS event; batch left for redelivery");
                continue;
            }
        };
        let trace = batch
            .first()
            .and_then(|m| m.attributes())
            .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::AwsTraceHeader))
            .and_then(|header| zx_http::trace::TraceHeader::parse(header));
        let response = handler(event, invoked + WORKER_TIMEOUT).await;
        // As each invocation ends on Lambda: its metrics, with its ids.
        zx_http::emf::flush(
            &format!("local-{}", uuid::Uuid::new_v4()),
            zx_http::trace::trace_id(trace.as_ref()),
        );
        let failed: HashSet<String> = response
            .batch_item_failures
            .into_iter()
            .map(|f| f.item_identifier)
            .collect();
        let done: Vec<_> = batch
            .iter()
            .filter(|m| !m.message_id().is_some_and(|id| failed.contains(id)))
            .filter_map(|m| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(m.message_id().unwrap_or_default())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        let deleted = done.len();
        if !done.is_empty()
            && let Err(error) = sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(done))
                .send()
                .await
        {
            tracing::warn!(queue = %url, error = %zx_domain::cause_chain(&error), "delete failed; the batch will be redelivered");
        }
        tracing::info!(
            function = %source.function,
            records = batch.len(),
            failed = failed.len(),
            deleted,
            latency_ms = invoked.elapsed().as_secs_f64() * 1000.0,
            "local event source mapping: batch"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("rate(1 minute)"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_rate("rate(5 minutes)"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_rate("rate(0 minutes)"), None);
        assert_eq!(parse_rate("cron(0 * * * ? *)"), None);
    }
}
