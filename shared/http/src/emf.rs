//! Metrics as CloudWatch Embedded Metric Format (EMF): the code counts with the `metrics`
//! facade (`metrics::counter!(zx_domain::metrics::ORDERS_PLACED)`), a process-wide
//! `metrics_cloudwatch_embedded` collector keeps the counts, and each invocation ends with
//! [`flush`]: one JSON document per dimension set on standard output, which CloudWatch Logs
//! turns into metrics, with the invocation's request id and trace id as properties (searchable
//! in Logs Insights, never dimensions).
//!
//! A Lambda instance runs one invocation at a time, so each flush holds exactly its
//! invocation's counts. The local gateway runs many at once in one process: every count is
//! still emitted exactly once, but a document's ids are those of the invocation that flushed.
//! Without [`init`] (tests that do not ask for metrics) counting does nothing.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use metrics_cloudwatch_embedded::Collector;
use zx_domain::metrics::{ALL, Unit};

/// Where flushed documents go.
pub type Sink = Box<dyn FnMut(&[u8]) + Send>;

struct Emf {
    collector: &'static Collector,
    sink: Mutex<Sink>,
}

static EMF: OnceLock<Option<Emf>> = OnceLock::new();

/// The namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "Zhixuan";

/// Installs the collector for this process, writing to standard output, under the namespace
/// `METRICS_NAMESPACE` (default [`DEFAULT_NAMESPACE`]). Later calls do nothing.
pub fn init() {
    let namespace = std::env::var("METRICS_NAMESPACE")
        .ok()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
    init_to(
        &namespace,
        Box::new(|bytes: &[u8]| {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(bytes);
            let _ = out.flush();
        }),
    );
}

/// [`init`] with `namespace` and `sink` (what a test captures the documents with). Returns
/// whether this call installed it.
pub fn init_to(namespace: &str, sink: Sink) -> bool {
    let mut installed = false;
    EMF.get_or_init(|| {
        let collector = match metrics_cloudwatch_embedded::Builder::new()
            .cloudwatch_namespace(namespace.to_owned())
            .init()
        {
            Ok(collector) => collector,
            Err(error) => {
                // Another recorder is installed: counting goes there, nothing is flushed here.
                tracing::warn!(%error, "metrics recorder not installed");
                return None;
            }
        };
        for metric in ALL {
            match metric.unit {
                Unit::Count => {
                    metrics::describe_counter!(metric.name, metrics::Unit::Count, metric.help)
                }
                Unit::Milliseconds => metrics::describe_histogram!(
                    metric.name,
                    metrics::Unit::Milliseconds,
                    metric.help
                ),
            }
        }
        installed = true;
        Some(Emf {
            collector,
            sink: Mutex::new(sink),
        })
    });
    installed
}

/// Writes what was counted since the last flush, with `request_id` and `trace_id` (the X-Ray
/// trace id, empty without one) as the documents' properties.
pub fn flush(request_id: &str, trace_id: &str) {
    let Some(Some(emf)) = EMF.get() else { return };
    let mut buffer = Vec::new();
    {
        // The properties and the flush under one lock: concurrent flushes (the local gateway)
        // never label one invocation's documents with another's ids.
        let Ok(mut sink) = emf.sink.lock() else {
            return;
        };
        emf.collector
            .set_property("RequestId", request_id.to_owned())
            .set_property("TraceId", trace_id.to_owned());
        if let Err(error) = emf.collector.flush(&mut buffer) {
            tracing::warn!(%error, "metrics could not be written");
            return;
        }
        if !buffer.is_empty() {
            sink(&buffer);
        }
    }
}
