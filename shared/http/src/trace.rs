//! Trace context: the X-Ray trace header (`Root=1-…;Parent=…;Sampled=…`) of the request or
//! message being handled, carried from the HTTP request through the outbox row and the SQS
//! message's `AWSTraceHeader` system attribute to the worker, so one order's whole life shares
//! one trace id (logged as `trace_id` on every line of the path).
//!
//! The header of the work in progress is a task-local ([`with_trace`], [`current`]): the outbox
//! message constructor reads it, as an X-Ray SDK reads its context, so no use case passes it by
//! hand.

use std::future::Future;

/// An X-Ray trace header, checked: only `Root`, `Parent`, `Sampled` and `Lineage` fields of
/// safe characters, at most [`TraceHeader::MAX_LEN`] bytes, with a `Root` of the X-Ray form.
/// Anything else (a client's or a forged message's header) is dropped, never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeader(String);

impl TraceHeader {
    /// SQS limits a system attribute far above this; X-Ray headers are ~90 bytes.
    pub const MAX_LEN: usize = 256;

    /// The header if `text` is one, `None` otherwise.
    pub fn parse(text: &str) -> Option<Self> {
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return None;
        }
        let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '=' | ';' | ':');
        if !text.chars().all(safe) {
            return None;
        }
        let header = Self(text.to_owned());
        header.root().filter(|root| valid_root(root))?;
        Some(header)
    }

    /// A new trace, sampled, as API Gateway or Lambda would start one: `Root=1-<8 hex epoch
    /// seconds>-<24 random hex>;Parent=<16 random hex>;Sampled=1`.
    pub fn generate() -> Self {
        let seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let random = uuid::Uuid::new_v4().simple().to_string();
        let parent = uuid::Uuid::new_v4().simple().to_string();
        Self(format!(
            "Root=1-{:08x}-{};Parent={};Sampled=1",
            seconds & 0xffff_ffff,
            random.get(..24).unwrap_or_default(),
            parent.get(..16).unwrap_or_default()
        ))
    }

    /// The trace id (`1-5759e988-bd862e3fe1be46a994272793`): what log lines carry.
    pub fn root(&self) -> Option<&str> {
        self.0
            .split(';')
            .find_map(|field| field.strip_prefix("Root="))
    }

    /// The whole header, as sent in `AWSTraceHeader`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TraceHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_root(root: &str) -> bool {
    let mut parts = root.split('-');
    let hex = |s: &str, len: usize| s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit());
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("1"), Some(time), Some(id), None) if hex(time, 8) && hex(id, 24)
    )
}

tokio::task_local! {
    static CURRENT: Option<TraceHeader>;
}

/// Runs `work` with `trace` as the current trace header.
pub async fn with_trace<F: Future>(trace: Option<TraceHeader>, work: F) -> F::Output {
    CURRENT.scope(trace, work).await
}

/// The trace header of the work in progress, if any.
pub fn current() -> Option<TraceHeader> {
    CURRENT.try_with(Clone::clone).ok().flatten()
}

/// The trace id to log for `trace` (empty without one).
pub fn trace_id(trace: Option<&TraceHeader>) -> &str {
    trace.and_then(TraceHeader::root).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_and_their_root_read() {
        let header = TraceHeader::parse(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(header.root(), Some("1-5759e988-bd862e3fe1be46a994272793"));
        let generated = TraceHeader::generate();
        assert_eq!(
            TraceHeader::parse(generated.as_str()),
            Some(generated.clone())
        );
        assert_ne!(generated, TraceHeader::generate());
        for bad in [
            "",
            "Root=1-5759e988-bd862e3fe1be46a994272793\nforged log line",
            "Root=1-5759e988-bd862e3fe1be46a99427279;Sampled=1",
            "Root=2-5759e988-bd862e3fe1be46a994272793",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=1-5759e988-bd862e3fe1be46a994272793 x",
            &format!(
                "Root=1-5759e988-bd862e3fe1be46a994272793;{}",
                "a".repeat(300)
            ),
        ] {
            assert_eq!(TraceHeader::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_current_header_is_the_scope_s() {
        assert_eq!(current(), None);
        let header = TraceHeader::generate();
        let seen = with_trace(Some(header.clone()), async { current() }).await;
        assert_eq!(seen, Some(header));
        assert_eq!(current(), None);
    }
}
