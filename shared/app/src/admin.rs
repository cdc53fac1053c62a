//! What the operator commands of `zx-admin` do, over the repository traits (so tests run them
//! on both backends without the binary).

use zx_domain::{Outbox, RepositoryError, RowKey};

/// Most parked rows one listing shows.
pub const PARKED_LISTING: usize = 100;

/// `zx-admin outbox parked`: every parked outbox row (oldest first), one line each: its key,
/// when and why it was parked, and the start of its body.
pub async fn parked_outbox(outbox: &dyn Outbox) -> Result<String, RepositoryError> {
    let rows = outbox.parked(PARKED_LISTING).await?;
    if rows.is_empty() {
        return Ok("no parked outbox rows".into());
    }
    let mut lines = Vec::with_capacity(rows.len() + 1);
    lines.push(format!(
        "{} parked outbox row(s) (resend one with `zx-admin outbox resend KEY`):",
        rows.len()
    ));
    for row in rows {
        let body: String = row.body.chars().take(120).collect();
        lines.push(format!(
            "{}\tparked {}\t{}\t{}",
            row.key,
            row.parked_at
                .map_or_else(|| "at an unknown time".to_owned(), |t| t.to_rfc3339()),
            row.reason.replace(['\n', '\t'], " "),
            body.replace(['\n', '\t'], " ")
        ));
    }
    Ok(lines.join("\n"))
}

/// `zx-admin outbox resend KEY`: puts the parked row `key` back among the unsent; the relay's
/// next run sends it (or parks it again, saying why).
pub async fn resend_parked(outbox: &dyn Outbox, key: &str) -> Result<String, RepositoryError> {
    if outbox.unpark(&RowKey(key.to_owned())).await? {
        Ok(format!(
            "{key} is back in the outbox: the relay's next run sends it"
        ))
    } else {
        Err(RepositoryError::NotFound)
    }
}
