//! What the system counts: every business and operational metric it emits (as CloudWatch
//! Embedded Metric Format documents in the functions' logs), with its unit and dimensions.
//!
//! Dimensions are small closed sets (a reason, a limit group, a function name), never ids, so
//! the number of metric series, and so their cost, is bounded whatever the traffic: the
//! largest is `ColdStarts` (one series per function).

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Milliseconds => "Milliseconds",
        }
    }
}

/// One metric: name, unit, the dimensions it may carry (each from a closed set), what it says.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub dimensions: &'static [&'static str],
    pub help: &'static str,
}

/// An order stored by `POST /orders` (a replayed key is not counted again).
pub const ORDERS_PLACED: &str = "OrdersPlaced";
/// `POST /orders` refused before any order was stored: `Reason` = `sold_out` | `open_limit`.
pub const ORDERS_REFUSED: &str = "OrdersRefused";
/// `pending → confirmed`.
pub const ORDERS_CONFIRMED: &str = "OrdersConfirmed";
/// `→ cancelled`, with `Reason` = [`CANCEL_REASONS`].
pub const ORDERS_CANCELLED: &str = "OrdersCancelled";
/// `confirmed → paid`.
pub const ORDERS_PAID: &str = "OrdersPaid";
/// `paid → shipped`.
pub const ORDERS_SHIPPED: &str = "OrdersShipped";
/// Orders whose stock the inventory worker reserved.
pub const RESERVATIONS: &str = "Reservations";
/// Reserves the inventory worker rejected: `Reason` = `out_of_stock` | `unavailable`.
pub const RESERVATION_REJECTIONS: &str = "ReservationRejections";
/// Age of the oldest unsent outbox row the relay found (0 when none was due).
pub const RELAY_LAG: &str = "RelayLag";
/// Outbox messages the relay sent (the direct send after a write had failed).
pub const RELAYED: &str = "Relayed";
/// Outbox rows and orders parked (unreadable, or refused for good by their destination).
pub const PARKED_ROWS: &str = "ParkedRows";
/// Messages a worker sent to its dead-letter queue at once (malformed).
pub const DEAD_LETTERS: &str = "DeadLetters";
/// Catalogue reads answered from the cache.
pub const CACHE_HITS: &str = "CacheHits";
/// Catalogue reads that went to the store.
pub const CACHE_MISSES: &str = "CacheMisses";
/// Requests answered 429 by a per-client limit: `Limit` = the limit's group.
pub const RATE_LIMITED: &str = "RateLimited";
/// Route limits that let a request through because the cache could not count it.
pub const RATE_LIMIT_FAIL_OPENS: &str = "RateLimitFailOpens";
/// A new instance of a function: `Function` = its name.
pub const COLD_STARTS: &str = "ColdStarts";

/// The reasons an order is cancelled for, as the `Reason` dimension of
/// [`ORDERS_CANCELLED`]: the system's reasons, or who cancelled (a customer's or an admin's
/// free-text reason is never a dimension).
pub const CANCEL_REASONS: [&str; 6] = [
    "timeout",
    "payment_timeout",
    "out_of_stock",
    "unavailable",
    "customer",
    "admin",
];

/// Every metric, with its unit and dimensions.
pub const ALL: [Metric; 17] = [
    count(ORDERS_PLACED, &[], "orders stored by POST /orders"),
    count(
        ORDERS_REFUSED,
        &["Reason"],
        "orders refused before being stored",
    ),
    count(ORDERS_CONFIRMED, &[], "pending orders confirmed"),
    count(ORDERS_CANCELLED, &["Reason"], "orders cancelled"),
    count(ORDERS_PAID, &[], "orders paid"),
    count(ORDERS_SHIPPED, &[], "orders shipped"),
    count(RESERVATIONS, &[], "orders whose stock was reserved"),
    count(RESERVATION_REJECTIONS, &["Reason"], "reserves rejected"),
    Metric {
        name: RELAY_LAG,
        unit: Unit::Milliseconds,
        dimensions: &[],
        help: "age of the oldest unsent outbox row",
    },
    count(RELAYED, &[], "outbox messages sent by the relay"),
    count(PARKED_ROWS, &[], "outbox rows and orders parked"),
    count(
        DEAD_LETTERS,
        &[],
        "malformed messages sent to a dead-letter queue",
    ),
    count(CACHE_HITS, &[], "catalogue reads from the cache"),
    count(CACHE_MISSES, &[], "catalogue reads from the store"),
    count(
        RATE_LIMITED,
        &["Limit"],
        "requests refused by a per-client limit",
    ),
    count(
        RATE_LIMIT_FAIL_OPENS,
        &[],
        "route limits that failed open (cache down)",
    ),
    count(COLD_STARTS, &["Function"], "new function instances"),
];

const fn count(
    name: &'static str,
    dimensions: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
        dimensions,
        help,
    }
}

/// The metric named `name`, if there is one.
pub fn metric(name: &str) -> Option<&'static Metric> {
    ALL.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dimensions_few() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|m| m.dimensions.len() <= 1));
        assert_eq!(metric(RELAY_LAG).map(|m| m.unit), Some(Unit::Milliseconds));
    }
}
