//! Logging set-up: JSON lines (one object per event) with the fields of every span the event
//! is in (`spans`: the Lambda runtime's request id, the request's or message's `trace_id`), so
//! `grep <trace id>` finds every line of an order's path; level from `RUST_LOG` (default
//! `info`).
//!
//! `RUST_LOG` takes a level (`info`) and per-target levels (`zx_http=debug,warn`): a
//! `Targets` filter, not `EnvFilter`, whose span-field and regex syntax would link a regex
//! engine (~0.6 MB) into every function for nothing it is used for here.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter `RUST_LOG` describes; `info` when unset or not understood.
pub fn log_filter(value: Option<&str>) -> Targets {
    value
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// Installs the JSON subscriber once, writing to standard output; later calls are no-ops.
pub fn init_tracing() {
    init_tracing_to(
        log_filter(std::env::var("RUST_LOG").ok().as_deref()),
        std::io::stdout,
    );
}

/// [`init_tracing`] with `filter` and `writer` (what a test captures the deployed format with).
pub fn init_tracing_to<W>(filter: Targets, writer: W)
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    let format = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_ansi(false)
        .flatten_event(true)
        .with_writer(writer);
    let _already_installed = tracing_subscriber::registry()
        .with(format)
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::log_filter;

    #[test]
    fn rust_log_levels_and_targets() {
        let default = log_filter(None);
        assert!(default.would_enable("zx_http", &Level::INFO));
        assert!(!default.would_enable("zx_http", &Level::DEBUG));
        let targeted = log_filter(Some("zx_http=debug,warn"));
        assert!(targeted.would_enable("zx_http::edge", &Level::DEBUG));
        assert!(!targeted.would_enable("hyper", &Level::INFO));
        assert!(log_filter(Some("not a filter ===")).would_enable("x", &Level::INFO));
    }
}
