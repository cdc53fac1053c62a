//! The Lambda entry points of every function: cold start (logging, configuration, services),
//! the function's builder, then the invocations. Each `main.rs` is one call here.

use std::sync::Arc;
use std::time::Instant;

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use tracing::Instrument;

use crate::backend::{before_invocation, lambda_aws_config};
use crate::capabilities::Needs;
use crate::workers::{OUTBOX_RELAY, SqsFunction, outbox_relay};
use crate::{Config, ConfigError, Services};

/// Cold start of an API function: JSON logging, configuration, services. A configuration error
/// is logged and returned, so the function refuses to start with a message naming the variable.
pub async fn start(function: &'static str, needs: &Needs) -> Result<Services, ConfigError> {
    zx_http::init_tracing();
    zx_http::emf::init();
    metrics::counter!(zx_domain::metrics::COLD_STARTS, "Function" => function).increment(1);
    let built = match Config::from_env() {
        Ok(config) => Services::build_for(&config, &lambda_aws_config(), needs).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &built {
        tracing::error!(%error, "refusing to start: invalid configuration");
    }
    built
}

/// A function's `main`: cold start, build its handler with `build` (the same builder the local
/// gateway calls), then serve Lambda invocations.
pub async fn run_http(function: &crate::functions::HttpFunction) -> Result<(), lambda_http::Error> {
    let services = start(function.name, &function.needs).await?;
    let handler = (function.build)(&services).inspect_err(|error| {
        tracing::error!(%error, "refusing to start: invalid configuration");
    })?;
    drop(services);
    let handler: zx_http::HttpHandler = Arc::new(move |request| {
        let handler = handler.clone();
        Box::pin(async move {
            before_invocation().await;
            handler(request).await
        })
    });
    zx_http::run(handler).await
}

fn refuse(error: ConfigError) -> ConfigError {
    tracing::error!(%error, "refusing to start: invalid configuration");
    error
}

/// An SQS function's `main`: cold start, build with `build`, serve batches with partial batch
/// responses.
pub async fn run_sqs(function: &SqsFunction) -> Result<(), lambda_runtime::Error> {
    let services = start(function.name, &function.needs).await?;
    let handler = (function.build)(&services).map_err(refuse)?;
    drop(services);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let handler = handler.clone();
        let span = tracing::info_span!("invocation", lambda_request_id = %event.context.request_id);
        let deadline = deadline_of(&event.context);
        let mut ids = invocation_ids(&event.context);
        // The batch's metrics carry the order's trace (its first message's AWSTraceHeader), as
        // its log lines do; SQS-triggered invocations start a trace of their own otherwise.
        if let Some(trace) = event
            .payload
            .records
            .first()
            .and_then(crate::workers::record_trace)
        {
            ids.1 = zx_http::trace::trace_id(Some(&trace)).to_owned();
        }
        async move {
            before_invocation().await;
            let response = handler(event.payload, deadline).await;
            zx_http::emf::flush(&ids.0, &ids.1);
            Ok::<_, std::convert::Infallible>(response)
        }
        .instrument(span)
    }))
    .await
}

/// The invocation's request id and X-Ray trace id (empty without active tracing), for its
/// metrics.
fn invocation_ids(context: &lambda_runtime::Context) -> (String, String) {
    let trace = context
        .xray_trace_id
        .as_deref()
        .and_then(zx_http::trace::TraceHeader::parse);
    (
        context.request_id.clone(),
        zx_http::trace::trace_id(trace.as_ref()).to_owned(),
    )
}

/// The invocation's deadline (milliseconds since the epoch) as an instant of this clock.
fn deadline_of(context: &lambda_runtime::Context) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let left = u128::from(context.deadline).saturating_sub(now_ms);
    Instant::now()
        + std::time::Duration::from_millis(u64::try_from(left).unwrap_or(u64::MAX).min(900_000))
}

/// The relay's `main`: each scheduled event is one run, which ends before the invocation's
/// deadline and reports what it did and left (faults are logged at error level).
pub async fn run_scheduled() -> Result<(), lambda_runtime::Error> {
    let services = start(crate::workers::OUTBOX_RELAY_NAME, &OUTBOX_RELAY).await?;
    let handler = outbox_relay(&services).map_err(refuse)?;
    drop(services);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
        let handler = handler.clone();
        let span = tracing::info_span!("invocation", lambda_request_id = %event.context.request_id);
        let deadline = deadline_of(&event.context);
        let ids = invocation_ids(&event.context);
        async move {
            before_invocation().await;
            let report = handler(deadline).await;
            zx_http::emf::flush(&ids.0, &ids.1);
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(report).unwrap_or_default())
        }
        .instrument(span)
    }))
    .await
}
