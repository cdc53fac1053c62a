//! Configuration from environment variables (the table in README.md), parsed once at cold
//! start into types that cannot hold invalid values. Nothing secret is ever printed.

use std::collections::HashMap;
use std::time::Duration;

use zx_auth::token::parse_ttl;
use zx_auth::{BcryptCost, PublicKey, SigningKey, TokenSettings};
pub use zx_cache::RateLimits;
use zx_store_postgres::{PgSchema, PoolSettings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required but not set")]
    Missing(&'static str),
    /// A builder asked for a store its function's `Needs` do not declare (a bug, caught by
    /// the test that builds every function with its own wiring).
    #[error("this function is not wired with the {0} store")]
    NotWired(&'static str),
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// A connection string that may hold a password: `Debug` shows neither.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(**redacted**)")
    }
}

/// Which backend holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    DynamoDb,
    Postgres,
}

/// Looks a variable up by name.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Reads variables from the process environment or, in tests, from a map.
pub struct Source(Box<Lookup>);

impl Source {
    pub fn env() -> Self {
        Self(Box::new(|name| std::env::var(name).ok()))
    }

    /// Any lookup (the consistency tests record which variables the configuration reads).
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self(Box::new(lookup))
    }

    pub fn map(values: HashMap<String, String>) -> Self {
        Self(Box::new(move |name| values.get(name).cloned()))
    }

    /// The variable's value, if set and not blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }
}

fn parse_or<T>(
    source: &Source,
    var: &'static str,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match source.get(var) {
        Some(value) => parse(&value).map_err(|reason| ConfigError::Invalid { var, reason }),
        None => Ok(default),
    }
}

fn schema(source: &Source, var: &'static str, default: &str) -> Result<PgSchema, ConfigError> {
    PgSchema::parse(&source.get(var).unwrap_or_else(|| default.to_owned()))
        .map_err(|reason| ConfigError::Invalid { var, reason })
}

fn millis(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|&ms| (1..=60_000).contains(&ms))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("must be milliseconds between 1 and 60000, got {text:?}"))
}

/// Everything the functions read from the environment. Keys are optional here; the functions
/// that need them refuse to start without them (see `crate::functions`).
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreKind,
    pub users_table: String,
    pub database_url: Option<DatabaseUrl>,
    /// `DATABASE_IAM_AUTH=true`: connect with IAM authentication tokens (RDS Proxy) instead of
    /// a password; `DATABASE_URL` then carries none.
    pub database_iam_auth: bool,
    pub users_schema: PgSchema,
    pub products_table: String,
    pub products_schema: PgSchema,
    pub pool: PoolSettings,
    /// `CACHE_URL`, checked to be `redis://` or `rediss://`.
    pub cache_url: Option<String>,
    /// ElastiCache name to resolve at cold start when `CACHE_URL` is not set.
    pub cache_name: Option<String>,
    pub cache_timeout: Duration,
    pub cache_key_prefix: String,
    pub bcrypt_cost: BcryptCost,
    pub health_timeout: Duration,
    pub rate_limits: RateLimits,
    /// `LOGIN_DELAY_AFTER` (default 3), `LOGIN_LOCK_AFTER` (default 10), `LOGIN_LOCK_SECONDS`
    /// (default 900): per-account limits on wrong passwords.
    pub guard: zx_cache::GuardSettings,
    /// Deadline of one DynamoDB call (`STORE_TIMEOUT_MS`), retries included.
    pub store_timeout: Duration,
    /// How long cached catalogue entries live (`CACHE_TTL_SECONDS`, seed: 600): the bound on
    /// staleness when the cache was unreachable during a write.
    pub cache_ttl: Duration,
    /// How long a product stays known sold out (`SOLD_OUT_TTL_SECONDS`, default 10): the bound
    /// on a false sold-out.
    pub sold_out_ttl: Duration,
    /// How long after a catalogue write listings are not cached (`CACHE_INDEX_LAG_MS`): the
    /// listing index may still show the old state meanwhile.
    pub index_lag: Duration,
    pub token: TokenSettings,
    /// `JWT_PRIVATE_KEY`: an in-memory signing key, for tests and tools only (a deployment
    /// signs in KMS: `JWT_SIGNING_KEY_ID`).
    pub signing_key: Option<SigningKey>,
    /// `JWT_SIGNING_KEY_ID`: the KMS key (id, ARN or alias) the issuing functions sign with;
    /// the key never leaves KMS.
    pub signing_key_id: Option<String>,
    /// `JWT_PUBLIC_KEYS`: every function that verifies tokens.
    pub public_keys: Option<Vec<PublicKey>>,
    pub orders_table: String,
    pub orders_schema: PgSchema,
    /// `INVENTORY_QUEUE_URL`, `ORDER_QUEUE_URL`, `ORDER_EVENTS_TOPIC_ARN`: all or none; the
    /// functions that send messages refuse to start without them.
    pub destinations: Option<zx_messaging::Destinations>,
    /// `ACCOUNT_NOTICES_TOPIC_ARN`: where users-update sends account notices (an e-mail
    /// change's code) for the shop's mailer; users-update refuses to start without it.
    pub account_notices_topic_arn: Option<String>,
    /// `ORDER_PENDING_TIMEOUT` (default 15m), `ORDER_PAYMENT_TIMEOUT` (default 30m),
    /// `ORDER_MAX_OPEN` (default 10) and `OUTBOX_RELAY_DELAY_MS` (default 10000).
    pub saga: zx_orders::usecases::SagaSettings,
}

fn destinations(source: &Source) -> Result<Option<zx_messaging::Destinations>, ConfigError> {
    let vars = [
        "INVENTORY_QUEUE_URL",
        "ORDER_QUEUE_URL",
        "ORDER_EVENTS_TOPIC_ARN",
    ];
    let values: Vec<Option<String>> = vars.iter().map(|v| source.get(v)).collect();
    let (inventory_dlq_url, order_dlq_url) =
        (source.get("INVENTORY_DLQ_URL"), source.get("ORDER_DLQ_URL"));
    match values.as_slice() {
        [Some(inventory), Some(orders), Some(topic)] => Ok(Some(zx_messaging::Destinations {
            inventory_queue_url: inventory.clone(),
            order_queue_url: orders.clone(),
            order_events_topic_arn: topic.clone(),
            inventory_dlq_url,
            order_dlq_url,
        })),
        [None, None, None] => Ok(None),
        _ => {
            let missing = vars
                .iter()
                .zip(&values)
                .find(|(_, value)| value.is_none())
                .map_or("INVENTORY_QUEUE_URL", |(var, _)| var);
            Err(ConfigError::Missing(missing))
        }
    }
}

/// A parser of whole seconds from 1 to `max`.
fn seconds(max: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |text| {
        text.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .map(Duration::from_secs)
            .ok_or_else(|| format!("must be seconds from 1 to {max}, got {text:?}"))
    }
}

fn per_minute(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .ok_or_else(|| {
            format!("must be a number of requests per minute from 1 to 100000, got {text:?}")
        })
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&Source::env())
    }

    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let store = parse_or(source, "STORE", StoreKind::DynamoDb, |v| match v.trim() {
            "dynamodb" => Ok(StoreKind::DynamoDb),
            "postgres" => Ok(StoreKind::Postgres),
            other => Err(format!(
                "must be \"dynamodb\" or \"postgres\", got {other:?}"
            )),
        })?;
        let database_url = source.get("DATABASE_URL").map(DatabaseUrl);
        if store == StoreKind::Postgres && database_url.is_none() {
            return Err(ConfigError::Missing("DATABASE_URL"));
        }
        let mut pool = PoolSettings::default();
        pool.max_connections = parse_or(source, "PG_MAX_CONNECTIONS", pool.max_connections, |v| {
            v.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=50).contains(n))
                .ok_or_else(|| format!("must be a number from 1 to 50, got {v:?}"))
        })?;
        let cache_timeout = parse_or(
            source,
            "CACHE_TIMEOUT_MS",
            Duration::from_millis(100),
            millis,
        )?;
        let cache_key_prefix = source
            .get("CACHE_KEY_PREFIX")
            .unwrap_or_else(|| "zx:".into());
        let cache_url = match source.get("CACHE_URL") {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => Some(url),
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: "CACHE_URL",
                    reason: "must start with redis:// or rediss://".into(),
                });
            }
            None => None,
        };
        let defaults = RateLimits::default();
        let rate_limits = RateLimits {
            users_per_client: parse_or(
                source,
                "RATE_LIMIT_USERS",
                defaults.users_per_client,
                per_minute,
            )?,
            products_per_client: parse_or(
                source,
                "RATE_LIMIT_PRODUCTS",
                defaults.products_per_client,
                per_minute,
            )?,
            orders_per_client: parse_or(
                source,
                "RATE_LIMIT_ORDERS",
                defaults.orders_per_client,
                per_minute,
            )?,
            login_per_ip_and_email: parse_or(
                source,
                "RATE_LIMIT_LOGIN",
                defaults.login_per_ip_and_email,
                per_minute,
            )?,
            login_per_ip: parse_or(
                source,
                "RATE_LIMIT_LOGIN_IP",
                defaults.login_per_ip,
                per_minute,
            )?,
            register_per_ip: parse_or(
                source,
                "RATE_LIMIT_REGISTER",
                defaults.register_per_ip,
                per_minute,
            )?,
            search_per_client: parse_or(
                source,
                "RATE_LIMIT_SEARCH",
                defaults.search_per_client,
                per_minute,
            )?,
        };
        if source.get("JWT_PRIVATE_KEY").is_some() && source.get("JWT_SIGNING_KEY_ID").is_some() {
            return Err(ConfigError::Invalid {
                var: "JWT_SIGNING_KEY_ID",
                reason: "set JWT_SIGNING_KEY_ID (KMS) or JWT_PRIVATE_KEY (tests), not both".into(),
            });
        }
        let guard_defaults = zx_cache::GuardSettings::default();
        let count = |text: &str| {
            text.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| format!("must be a number of failures from 1 to 1000, got {text:?}"))
        };
        let guard = zx_cache::GuardSettings {
            delay_after: parse_or(
                source,
                "LOGIN_DELAY_AFTER",
                guard_defaults.delay_after,
                count,
            )?,
            lock_after: parse_or(source, "LOGIN_LOCK_AFTER", guard_defaults.lock_after, count)?,
            lock_for: parse_or(
                source,
                "LOGIN_LOCK_SECONDS",
                guard_defaults.lock_for,
                seconds(86_400),
            )?,
            ..guard_defaults
        };
        let database_iam_auth = parse_or(source, "DATABASE_IAM_AUTH", false, |v| match v.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("must be true or false, got {other:?}")),
        })?;
        Ok(Self {
            database_iam_auth,
            guard,
            store,
            users_table: source
                .get("USERS_TABLE")
                .unwrap_or_else(|| "zhixuan-users".into()),
            database_url,
            users_schema: schema(source, "USERS_SCHEMA", "users")?,
            products_table: source
                .get("PRODUCTS_TABLE")
                .unwrap_or_else(|| "zhixuan-products".into()),
            products_schema: schema(source, "PRODUCTS_SCHEMA", "products")?,
            pool,
            cache_url,
            cache_name: source.get("CACHE_NAME"),
            cache_timeout,
            cache_key_prefix,
            bcrypt_cost: parse_or(
                source,
                "BCRYPT_COST",
                BcryptCost::DEFAULT,
                BcryptCost::parse,
            )?,
            health_timeout: parse_or(
                source,
                "HEALTH_TIMEOUT_MS",
                Duration::from_millis(1000),
                millis,
            )?,
            rate_limits,
            store_timeout: parse_or(
                source,
                "STORE_TIMEOUT_MS",
                Duration::from_millis(3000),
                millis,
            )?,
            cache_ttl: parse_or(
                source,
                "CACHE_TTL_SECONDS",
                Duration::from_secs(600),
                seconds(86_400),
            )?,
            sold_out_ttl: parse_or(
                source,
                "SOLD_OUT_TTL_SECONDS",
                Duration::from_secs(10),
                seconds(600),
            )?,
            index_lag: parse_or(
                source,
                "CACHE_INDEX_LAG_MS",
                Duration::from_millis(2000),
                millis,
            )?,
            token: TokenSettings {
                issuer: source.get("JWT_ISSUER").unwrap_or_else(|| "zhixuan".into()),
                audience: source
                    .get("JWT_AUDIENCE")
                    .unwrap_or_else(|| "zhixuan-api".into()),
                ttl: parse_or(
                    source,
                    "JWT_EXPIRES_IN",
                    Duration::from_secs(15 * 60),
                    parse_ttl,
                )?,
                refresh_ttl: parse_or(
                    source,
                    "REFRESH_EXPIRES_IN",
                    Duration::from_secs(7 * 86_400),
                    parse_ttl,
                )?,
            },
            signing_key: source
                .get("JWT_PRIVATE_KEY")
                .map(|key| SigningKey::parse(&key))
                .transpose()
                .map_err(|reason| ConfigError::Invalid {
                    var: "JWT_PRIVATE_KEY",
                    reason,
                })?,
            signing_key_id: source.get("JWT_SIGNING_KEY_ID"),
            account_notices_topic_arn: source.get("ACCOUNT_NOTICES_TOPIC_ARN"),
            orders_table: source
                .get("ORDERS_TABLE")
                .unwrap_or_else(|| "zhixuan-orders".into()),
            orders_schema: schema(source, "ORDERS_SCHEMA", "orders")?,
            destinations: destinations(source)?,
            saga: zx_orders::usecases::SagaSettings {
                pending_timeout: parse_or(
                    source,
                    "ORDER_PENDING_TIMEOUT",
                    Duration::from_secs(15 * 60),
                    |v| {
                        parse_ttl(v).map_err(|_| {
                            format!("must look like 900, 15m or 1h (at most 30 days), got {v:?}")
                        })
                    },
                )?,
                payment_timeout: parse_or(
                    source,
                    "ORDER_PAYMENT_TIMEOUT",
                    Duration::from_secs(30 * 60),
                    |v| {
                        parse_ttl(v).map_err(|_| {
                            format!("must look like 1800, 30m or 1h (at most 30 days), got {v:?}")
                        })
                    },
                )?,
                max_open: parse_or(source, "ORDER_MAX_OPEN", 10, |v| {
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| format!("must be a whole number from 1 to 1000, got {v:?}"))
                })?,
                relay_delay: parse_or(
                    source,
                    "OUTBOX_RELAY_DELAY_MS",
                    Duration::from_secs(10),
                    millis,
                )?,
            },
            public_keys: source
                .get("JWT_PUBLIC_KEYS")
                .map(|keys| PublicKey::parse_list(&keys))
                .transpose()
                .map_err(|reason| ConfigError::Invalid {
                    var: "JWT_PUBLIC_KEYS",
                    reason,
                })?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> Source {
        Source::map(
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        )
    }

    #[test]
    fn defaults() {
        let config = Config::from_source(&source(&[])).unwrap();
        assert_eq!(config.store, StoreKind::DynamoDb);
        assert_eq!(config.users_table, "zhixuan-users");
        assert_eq!(config.bcrypt_cost, BcryptCost::DEFAULT);
        assert!(config.cache_url.is_none() && config.cache_name.is_none());
        assert_eq!(config.pool.max_connections, 2);
    }

    #[test]
    fn keys_are_optional_but_must_be_valid_and_never_print() {
        let config = Config::from_source(&source(&[])).unwrap();
        assert!(config.signing_key.is_none() && config.public_keys.is_none());
        let key = SigningKey::generate().unwrap();
        let encoded = key.to_base64();
        let config = Config::from_source(&source(&[
            ("JWT_PRIVATE_KEY", &encoded),
            ("JWT_PUBLIC_KEYS", key.public_key().encoded()),
            ("DATABASE_URL", "postgres://app:hunter2@db/x"),
        ]))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "password printed");
        assert!(!printed.contains(&encoded[..20]), "private key printed");
        assert_eq!(config.public_keys.unwrap().len(), 1);
        for (var, value) in [
            ("JWT_PRIVATE_KEY", "not-a-key"),
            ("JWT_PUBLIC_KEYS", "AAAA"),
        ] {
            let err = Config::from_source(&source(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(var), "{err}");
        }
    }

    #[test]
    fn invalid_values_are_named() {
        for (var, value) in [
            ("STORE", "mysql"),
            ("BCRYPT_COST", "99"),
            ("CACHE_URL", "http://x"),
            ("USERS_SCHEMA", "Users"),
            ("PG_MAX_CONNECTIONS", "0"),
            ("RATE_LIMIT_LOGIN", "0"),
            ("RATE_LIMIT_REGISTER", "lots"),
            ("PRODUCTS_SCHEMA", "Products"),
            ("RATE_LIMIT_USERS", "0"),
            ("STORE_TIMEOUT_MS", "0"),
            ("CACHE_TTL_SECONDS", "forever"),
            ("SOLD_OUT_TTL_SECONDS", "0"),
            ("JWT_EXPIRES_IN", "1y"),
            ("ORDERS_SCHEMA", "Orders"),
            ("ORDER_PENDING_TIMEOUT", "soon"),
            ("ORDER_PAYMENT_TIMEOUT", "later"),
            ("ORDER_MAX_OPEN", "0"),
            ("OUTBOX_RELAY_DELAY_MS", "0"),
        ] {
            let err = Config::from_source(&source(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(var), "{err}");
        }
        let err = Config::from_source(&source(&[("ORDER_QUEUE_URL", "http://q")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "INVENTORY_QUEUE_URL is required but not set"
        );
        let err = Config::from_source(&source(&[("STORE", "postgres")])).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"));
    }
}
