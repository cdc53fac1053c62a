//! Builds the adapters once per cold start. Nothing here does network I/O: the SDK client,
//! the Postgres pool and the cache connect on first use.
//!
//! What a function builds is chosen at compile time: each function's [`Needs`] becomes a
//! [`Wiring`] of constructor pointers in a `const`, so a function's binary references (and,
//! after LTO, links) only the adapters it uses. The Postgres adapter is linked only with the
//! `postgres` feature (a `Store=postgres` build).

use std::sync::Arc;

use zx_auth::{PasswordHasher, TokenIssuer, TokenVerifier};
use zx_cache::Cache;
use zx_domain::{
    InventoryRepository, MessageSender, Notifier, OrderRepository, Outbox, ProductRepository,
    SessionRepository, UserRepository,
};
use zx_store_dynamodb::{
    DynamoOrderRepository, DynamoProductRepository, DynamoSessionRepository, DynamoUserRepository,
};

use crate::health::{CacheCheck, DynamoCheck, HealthCheck};
use crate::unwired::Unwired;
use crate::{Config, ConfigError, StoreKind};

/// The repositories a function was built with, and health checks for every configured store.
/// A repository the function does not use is absent: asking for it is a wiring error.
#[derive(Clone, Default)]
pub struct Stores {
    pub users: Option<Arc<dyn UserRepository>>,
    pub sessions: Option<Arc<dyn SessionRepository>>,
    pub products: Option<Arc<dyn ProductRepository>>,
    pub inventory: Option<Arc<dyn InventoryRepository>>,
    pub orders: Option<Arc<dyn OrderRepository>>,
    pub outbox: Option<Arc<dyn Outbox>>,
    pub checks: Vec<Arc<dyn HealthCheck>>,
}

fn wired<T: ?Sized>(store: &Option<Arc<T>>, name: &'static str) -> Result<Arc<T>, ConfigError> {
    store.clone().ok_or(ConfigError::NotWired(name))
}

impl Stores {
    pub fn users(&self) -> Result<Arc<dyn UserRepository>, ConfigError> {
        wired(&self.users, "users")
    }
    pub fn sessions(&self) -> Result<Arc<dyn SessionRepository>, ConfigError> {
        wired(&self.sessions, "sessions")
    }
    pub fn products(&self) -> Result<Arc<dyn ProductRepository>, ConfigError> {
        wired(&self.products, "products")
    }
    pub fn inventory(&self) -> Result<Arc<dyn InventoryRepository>, ConfigError> {
        wired(&self.inventory, "inventory")
    }
    pub fn orders(&self) -> Result<Arc<dyn OrderRepository>, ConfigError> {
        wired(&self.orders, "orders")
    }
    pub fn outbox(&self) -> Result<Arc<dyn Outbox>, ConfigError> {
        wired(&self.outbox, "outbox")
    }
}

/// How a function uses a store: the IAM actions it is granted follow from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Use {
    #[default]
    No,
    Read,
    Write,
}

impl Use {
    pub const fn any(self) -> bool {
        !matches!(self, Use::No)
    }
}

/// What a function uses, declared next to its builder (`crate::functions`, `crate::workers`).
/// Its cold start builds only this, and the consistency tests derive its IAM permissions from
/// it (`zx_app::permissions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub users: Use,
    /// Sessions (refresh tokens, users table): which of start, rotate, end.
    pub sessions: SessionUse,
    /// The catalogue (products table).
    pub products: Use,
    /// Reservations (products table): reserve, release, commit (`Write`), or only purge the
    /// finished ones (`Read`: the relay; DynamoDB's TTL does that, so it grants nothing).
    pub inventory: Use,
    pub orders: Use,
    /// The outbox (orders table).
    pub outbox: Use,
    /// Where it sends messages (SQS queues, the SNS topic).
    pub sends: Sends,
    /// Replace a user's password hash (users-login's rehash): `UpdateItem` of those attributes.
    pub rehash: bool,
    /// Sign access tokens: `kms:Sign` and `kms:GetPublicKey` on the signing key (users-login,
    /// users-refresh). No other function is built with a signer.
    pub sign: bool,
    /// Send account notices (an e-mail change's code): `sns:Publish` on the account-notices
    /// topic (users-update).
    pub notify: bool,
    /// The cache (catalogue views, per-client limits).
    pub cache: bool,
    /// `DescribeTable` on every table, and the other stores' pings.
    pub health: bool,
}

impl Needs {
    pub const NONE: Needs = Needs {
        users: Use::No,
        sessions: SessionUse::NONE,
        products: Use::No,
        inventory: Use::No,
        orders: Use::No,
        outbox: Use::No,
        sends: Sends::NONE,
        rehash: false,
        sign: false,
        notify: false,
        cache: false,
        health: false,
    };
    /// Everything: the local gateway and the tests, which run every function in one process.
    pub const ALL: Needs = Needs {
        users: Use::Write,
        sessions: SessionUse::ALL,
        products: Use::Write,
        inventory: Use::Write,
        orders: Use::Write,
        outbox: Use::Write,
        sends: Sends::ALL,
        rehash: true,
        sign: true,
        notify: true,
        cache: true,
        health: true,
    };
    /// Whether the function reaches a store (and so, with Postgres, connects to the database).
    pub const fn uses_a_store(&self) -> bool {
        self.users.any()
            || self.sessions.any()
            || self.products.any()
            || self.inventory.any()
            || self.orders.any()
            || self.outbox.any()
            || self.health
    }

    /// The constructors these needs select, chosen at compile time when used in a `const`.
    pub const fn wiring(self) -> Wiring {
        Wiring {
            needs: self,
            users: if self.users.any() {
                wire::users
            } else {
                wire::none
            },
            sessions: if self.sessions.any() {
                wire::sessions
            } else {
                wire::none
            },
            products: if self.products.any() {
                wire::products
            } else {
                wire::none
            },
            inventory: if self.inventory.any() {
                wire::inventory
            } else {
                wire::none
            },
            orders: if self.orders.any() {
                wire::orders
            } else {
                wire::none
            },
            outbox: if self.outbox.any() {
                wire::outbox
            } else {
                wire::none
            },
            sender: if self.sends.any() {
                wire::sender
            } else {
                wire::no_sender
            },
            checks: if self.health {
                wire::checks
            } else {
                wire::no_checks
            },
        }
    }
}

/// What a function does with sessions: each is its own set of IAM actions
/// (`zx_store_dynamodb::iam::SESSIONS_*`), and a call outside them is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionUse {
    /// Store a new session (login).
    pub start: bool,
    /// Read a session, replace its token, revoke it on a replay (refresh).
    pub rotate: bool,
    /// Read a session and revoke it (logout).
    pub end: bool,
    /// Read a session and its user's epoch and role: the standing of an access token on admin
    /// routes and writes.
    pub check: bool,
}

impl SessionUse {
    pub const NONE: SessionUse = SessionUse {
        start: false,
        rotate: false,
        end: false,
        check: false,
    };
    pub const ALL: SessionUse = SessionUse {
        start: true,
        rotate: true,
        end: true,
        check: true,
    };
    /// Only the standing of access tokens.
    pub const CHECK: SessionUse = SessionUse {
        check: true,
        ..SessionUse::NONE
    };
    pub const fn any(self) -> bool {
        self.start || self.rotate || self.end || self.check
    }
}

/// The destinations a function sends to (the relay resends to all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sends {
    /// `inventory.reserve`, `inventory.release`, `inventory.commit`.
    pub inventory_queue: bool,
    /// `inventory.reserved`, `inventory.failed`.
    pub order_queue: bool,
    /// `order.created`, `order.status_changed`.
    pub order_events: bool,
    /// Malformed messages of the inventory queue, to its dead-letter queue (the inventory
    /// worker).
    pub inventory_dlq: bool,
    /// Malformed messages of the order queue, to its dead-letter queue (the order worker).
    pub order_dlq: bool,
}

impl Sends {
    pub const NONE: Sends = Sends {
        inventory_queue: false,
        order_queue: false,
        order_events: false,
        inventory_dlq: false,
        order_dlq: false,
    };
    pub const ALL: Sends = Sends {
        inventory_queue: true,
        order_queue: true,
        order_events: true,
        inventory_dlq: true,
        order_dlq: true,
    };
    /// What moving an order sends: the inventory command and the order event.
    pub const ORDER_MOVES: Sends = Sends {
        inventory_queue: true,
        order_events: true,
        ..Sends::NONE
    };
    pub const fn any(self) -> bool {
        self.inventory_queue
            || self.order_queue
            || self.order_events
            || self.inventory_dlq
            || self.order_dlq
    }
}

/// Constructor pointers for one function: only those its [`Needs`] selected are referenced.
#[derive(Clone, Copy)]
pub struct Wiring {
    pub needs: Needs,
    users: fn(&Backend) -> Option<Arc<dyn UserRepository>>,
    sessions: fn(&Backend) -> Option<Arc<dyn SessionRepository>>,
    products: fn(&Backend) -> Option<Arc<dyn ProductRepository>>,
    inventory: fn(&Backend) -> Option<Arc<dyn InventoryRepository>>,
    orders: fn(&Backend) -> Option<Arc<dyn OrderRepository>>,
    outbox: fn(&Backend) -> Option<Arc<dyn Outbox>>,
    sender: fn(&Config, &aws_config::SdkConfig, Sends) -> Option<Arc<dyn MessageSender>>,
    checks: fn(&Backend) -> Vec<Arc<dyn HealthCheck>>,
}

/// The configured backend's connections (lazy), shared by the repositories built on it.
pub struct Backend {
    config: Config,
    dynamodb: Option<aws_sdk_dynamodb::Client>,
    #[cfg(feature = "postgres")]
    pool: Option<sqlx::PgPool>,
}

impl Backend {
    /// The backend of `config.store`: a DynamoDB client, or a lazy Postgres pool (one pool
    /// serves every schema: at most `PG_MAX_CONNECTIONS` per instance). With DynamoDB as the
    /// store, a configured `DATABASE_URL` is still checked by health.
    pub fn new(
        config: &Config,
        aws: &aws_config::SdkConfig,
        needs: &Needs,
    ) -> Result<Self, ConfigError> {
        // A function without stores or health checks builds no client.
        let uses_a_store = needs.uses_a_store();
        #[cfg(feature = "postgres")]
        let pool = config
            .database_url
            .as_ref()
            .map(|url| {
                let options = zx_store_postgres::connect_options(url.expose()).map_err(|e| {
                    ConfigError::Invalid {
                        var: "DATABASE_URL",
                        reason: e.to_string(),
                    }
                })?;
                let pool = zx_store_postgres::connect_lazy_with(options.clone(), &config.pool);
                if config.database_iam_auth && uses_a_store {
                    crate::rds_iam::register(pool.clone(), options, aws).map_err(|reason| {
                        ConfigError::Invalid {
                            var: "DATABASE_IAM_AUTH",
                            reason,
                        }
                    })?;
                }
                Ok::<_, ConfigError>(pool)
            })
            .transpose()?;
        let dynamodb = match config.store {
            StoreKind::DynamoDb if uses_a_store => Some(dynamodb_client(config, aws)),
            StoreKind::DynamoDb => None,
            #[cfg(feature = "postgres")]
            StoreKind::Postgres if pool.is_some() => None,
            #[cfg(feature = "postgres")]
            StoreKind::Postgres => return Err(ConfigError::Missing("DATABASE_URL")),
            #[cfg(not(feature = "postgres"))]
            StoreKind::Postgres => {
                return Err(ConfigError::Invalid {
                    var: "STORE",
                    reason: "this build has no Postgres adapter (build with --features postgres)"
                        .into(),
                });
            }
        };
        Ok(Self {
            config: config.clone(),
            dynamodb,
            #[cfg(feature = "postgres")]
            pool,
        })
    }
}

/// The constructors a [`Wiring`] points at.
mod wire {
    use super::*;

    pub fn none<T: ?Sized>(_: &Backend) -> Option<Arc<T>> {
        None
    }

    pub fn no_sender(
        _: &Config,
        _: &aws_config::SdkConfig,
        _: Sends,
    ) -> Option<Arc<dyn MessageSender>> {
        None
    }

    pub fn no_checks(_: &Backend) -> Vec<Arc<dyn HealthCheck>> {
        Vec::new()
    }

    /// The repository of the configured store: `$dynamo` over the DynamoDB client and
    /// `config`, or `$pg` over the Postgres pool and `config` (with the `postgres` feature).
    macro_rules! repository {
        ($backend:expr, $trait:ty, |$client:ident, $config:ident| $dynamo:expr, |$pool:ident| $pg:expr) => {{
            let backend: &Backend = $backend;
            let $config = &backend.config;
            match (&backend.dynamodb, $config.store) {
                (Some($client), StoreKind::DynamoDb) => {
                    let client = $client.clone();
                    let $client = client;
                    Some(Arc::new($dynamo) as Arc<$trait>)
                }
                #[cfg(feature = "postgres")]
                (_, StoreKind::Postgres) => backend
                    .pool
                    .clone()
                    .map(|$pool| Arc::new($pg) as Arc<$trait>),
                _ => None,
            }
        }};
    }

    pub fn users(backend: &Backend) -> Option<Arc<dyn UserRepository>> {
        repository!(
            backend,
            dyn UserRepository,
            |client, config| DynamoUserRepository::new(client, config.users_table.clone()),
            |pool| zx_store_postgres::PgUserRepository::new(pool, &config.users_schema)
        )
    }

    pub fn sessions(backend: &Backend) -> Option<Arc<dyn SessionRepository>> {
        repository!(
            backend,
            dyn SessionRepository,
            |client, config| DynamoSessionRepository::new(client, config.users_table.clone()),
            |pool| zx_store_postgres::PgSessionRepository::new(pool, &config.users_schema)
        )
    }

    pub fn products(backend: &Backend) -> Option<Arc<dyn ProductRepository>> {
        repository!(
            backend,
            dyn ProductRepository,
            |client, config| DynamoProductRepository::new(client, config.products_table.clone()),
            |pool| zx_store_postgres::PgProductRepository::new(pool, &config.products_schema)
        )
    }

    pub fn inventory(backend: &Backend) -> Option<Arc<dyn InventoryRepository>> {
        repository!(
            backend,
            dyn InventoryRepository,
            |client, config| DynamoProductRepository::new(client, config.products_table.clone()),
            |pool| zx_store_postgres::PgProductRepository::new(pool, &config.products_schema)
        )
    }

    pub fn orders(backend: &Backend) -> Option<Arc<dyn OrderRepository>> {
        repository!(
            backend,
            dyn OrderRepository,
            |client, config| DynamoOrderRepository::new(client, config.orders_table.clone()),
            |pool| zx_store_postgres::PgOrderRepository::new(pool, &config.orders_schema)
        )
    }

    pub fn outbox(backend: &Backend) -> Option<Arc<dyn Outbox>> {
        repository!(
            backend,
            dyn Outbox,
            |client, config| DynamoOrderRepository::new(client, config.orders_table.clone()),
            |pool| zx_store_postgres::PgOrderRepository::new(pool, &config.orders_schema)
        )
    }

    pub fn sender(
        config: &Config,
        aws: &aws_config::SdkConfig,
        sends: Sends,
    ) -> Option<Arc<dyn MessageSender>> {
        config.destinations.clone().map(|destinations| {
            // Every send bounded like a store call: a destination that does not answer fails
            // the send (the message stays in the outbox), never the Lambda timeout.
            let timeouts = sdk_timeouts(config);
            let inner = Arc::new(zx_messaging::AwsSender::new(
                aws_sdk_sqs::Client::from_conf(
                    aws_sdk_sqs::config::Builder::from(aws)
                        .timeout_config(timeouts.clone())
                        .build(),
                ),
                aws_sdk_sns::Client::from_conf(
                    aws_sdk_sns::config::Builder::from(aws)
                        .timeout_config(timeouts)
                        .build(),
                ),
                destinations,
            ));
            crate::unwired::RestrictedSender::wrap(inner, sends)
        })
    }

    /// DynamoDB is checked when it is the store; Postgres whenever `DATABASE_URL` is set, and
    /// required when it is the store.
    pub fn checks(backend: &Backend) -> Vec<Arc<dyn HealthCheck>> {
        let config = &backend.config;
        let mut checks: Vec<Arc<dyn HealthCheck>> = Vec::new();
        if let Some(client) = &backend.dynamodb {
            checks.push(Arc::new(DynamoCheck {
                client: client.clone(),
                tables: vec![
                    config.users_table.clone(),
                    config.products_table.clone(),
                    config.orders_table.clone(),
                ],
            }));
        }
        #[cfg(feature = "postgres")]
        if let Some(pool) = &backend.pool {
            checks.push(Arc::new(crate::health::PostgresCheck {
                pool: pool.clone(),
                required: config.store == StoreKind::Postgres,
            }));
        }
        checks
    }
}

/// The AWS configuration of a function on Lambda, built without I/O: region and credentials
/// from the variables Lambda sets (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`), and `AWS_ENDPOINT_URL` for the local stack. Not the SDK's default
/// chain: profiles, SSO, STS web identity, IMDS and ECS never apply on Lambda, and linking them
/// costs every function an STS client and ~1 MB (see docs/benchmarks.md), and a cold start a
/// look for profile files. Operators' tools use [`aws_config`].
pub fn lambda_aws_config() -> aws_config::SdkConfig {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut builder = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .http_client(crate::http_client::LazyTlsClient::shared())
        .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
            aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
        ));
    if let Some(region) = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")) {
        builder = builder.region(aws_config::Region::new(region));
    }
    if let Some(url) = var("AWS_ENDPOINT_URL") {
        builder = builder.endpoint_url(url);
    }
    builder.build()
}

/// Loads the AWS configuration with the SDK's default chain (profiles, SSO, ...): for
/// operators' tools (`zx-admin`) and tests, not for functions.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// Deadlines of one AWS call, retries included (`STORE_TIMEOUT_MS`).
fn sdk_timeouts(config: &Config) -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(config.store_timeout.min(std::time::Duration::from_secs(1)))
        .operation_attempt_timeout(config.store_timeout)
        .operation_timeout(config.store_timeout)
        .build()
}

/// The DynamoDB client: one per instance, every call bounded by `STORE_TIMEOUT_MS` (retries
/// included), so a store that does not answer is a 503, not a Lambda timeout.
fn dynamodb_client(config: &Config, aws: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Client {
    let dynamodb = aws_sdk_dynamodb::config::Builder::from(aws)
        .timeout_config(sdk_timeouts(config))
        .build();
    aws_sdk_dynamodb::Client::from_conf(dynamodb)
}

/// The repositories `wiring` selects, on the backend of `config.store`.
pub fn build_stores(
    config: &Config,
    aws: &aws_config::SdkConfig,
    wiring: &Wiring,
) -> Result<Stores, ConfigError> {
    let backend = Backend::new(config, aws, &wiring.needs)?;
    let mut stores = Stores {
        users: (wiring.users)(&backend),
        sessions: (wiring.sessions)(&backend),
        products: (wiring.products)(&backend),
        inventory: (wiring.inventory)(&backend),
        orders: (wiring.orders)(&backend),
        outbox: (wiring.outbox)(&backend),
        checks: (wiring.checks)(&backend),
    };
    crate::unwired::read_only_where_declared(&mut stores, &wiring.needs);
    Ok(stores)
}

/// The cache: at `CACHE_URL`, or else at the endpoint of the ElastiCache named `CACHE_NAME`
/// (one API call at cold start), or none.
pub async fn build_cache(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> Result<Option<Cache>, ConfigError> {
    let url = match (&config.cache_url, &config.cache_name) {
        (Some(url), _) => Some(url.clone()),
        (None, Some(name)) => {
            let client = aws_sdk_elasticache::Client::new(aws);
            let url = crate::discovery::resolve_cache_url(&client, name)
                .await
                .map_err(|error| ConfigError::Invalid {
                    var: "CACHE_NAME",
                    reason: zx_domain::cause_chain(&error),
                })?;
            tracing::info!(cache_name = %name, "cache endpoint resolved");
            Some(url)
        }
        (None, None) => None,
    };
    url.map(|url| {
        Cache::new(zx_cache::CacheSettings {
            url,
            timeout: config.cache_timeout,
            key_prefix: config.cache_key_prefix.clone(),
        })
        .map_err(|e| ConfigError::Invalid {
            var: "CACHE_URL",
            reason: e.to_string(),
        })
    })
    .transpose()
}

/// Everything the API functions use, built once per cold start without network I/O. Each
/// function's builder (`crate::functions`) takes what it needs; the local gateway builds it
/// once and hands it to every builder.
#[derive(Clone)]
pub struct Services {
    pub stores: Stores,
    pub cache: Option<Cache>,
    pub hasher: PasswordHasher,
    /// Present when `JWT_PRIVATE_KEY` is configured (the issuing function only).
    pub issuer: Option<Arc<TokenIssuer>>,
    /// Present when `JWT_PUBLIC_KEYS` is configured.
    pub verifier: Option<Arc<TokenVerifier>>,
    pub health_timeout: std::time::Duration,
    /// Per-client limits, enforced when the cache is configured.
    pub limits: zx_cache::ClientLimits,
    /// Per-account limits on wrong passwords.
    pub guard: zx_cache::GuardSettings,
    pub catalogue: zx_products::CatalogueSettings,
    /// Present when the queues and the topic are configured.
    pub sender: Option<Arc<dyn MessageSender>>,
    /// Where messages go (the local gateway polls these queues).
    pub destinations: Option<zx_messaging::Destinations>,
    /// Present when `ACCOUNT_NOTICES_TOPIC_ARN` is configured and the function sends notices.
    pub notifier: Option<Arc<dyn Notifier>>,
    pub saga: zx_orders::usecases::SagaSettings,
}

/// The token issuer of a function that signs (`needs.sign`): KMS when `JWT_SIGNING_KEY_ID` is
/// set, else the in-memory `JWT_PRIVATE_KEY` (tests and tools); none for any other function.
fn issuer(config: &Config, aws: &aws_config::SdkConfig, sign: bool) -> Option<Arc<TokenIssuer>> {
    if !sign {
        return None;
    }
    if let Some(key_id) = &config.signing_key_id {
        let signer = crate::kms::KmsSigner::new(aws, key_id.clone());
        return Some(Arc::new(TokenIssuer::remote(
            Arc::new(signer),
            config.token.clone(),
        )));
    }
    config
        .signing_key
        .as_ref()
        .map(|key| Arc::new(TokenIssuer::new(key, config.token.clone())))
}

/// The account notifier of a function that sends notices (`needs.notify`), when the topic is
/// configured.
fn notifier(
    config: &Config,
    aws: &aws_config::SdkConfig,
    notify: bool,
) -> Option<Arc<dyn Notifier>> {
    let topic = config
        .account_notices_topic_arn
        .clone()
        .filter(|_| notify)?;
    let sns = aws_sdk_sns::Client::from_conf(
        aws_sdk_sns::config::Builder::from(aws)
            .timeout_config(sdk_timeouts(config))
            .build(),
    );
    Some(Arc::new(zx_messaging::SnsNotifier::new(sns, topic)))
}

/// Everything, for the local gateway and the tests (every function in one process).
pub const ALL: Wiring = Needs::ALL.wiring();

impl Services {
    /// Builds every service with the AWS configuration of the environment.
    pub async fn build(config: &Config) -> Result<Self, ConfigError> {
        Self::build_with_aws(config, &aws_config().await).await
    }

    /// Builds every service with a given AWS configuration.
    pub async fn build_with_aws(
        config: &Config,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ConfigError> {
        Self::build_wired(config, aws, &ALL).await
    }

    /// Builds what `wiring` selects (one function's cold start).
    pub async fn build_wired(
        config: &Config,
        aws: &aws_config::SdkConfig,
        wiring: &Wiring,
    ) -> Result<Self, ConfigError> {
        let cache = if wiring.needs.cache {
            build_cache(config, aws).await?
        } else {
            None
        };
        let stores = build_stores(config, aws, wiring)?;
        // The first database token, before any query (IAM authentication only).
        before_invocation().await;
        Ok(Self {
            stores,
            limits: zx_cache::ClientLimits {
                limiter: cache.clone().map(zx_cache::RateLimiter::new),
                limits: config.rate_limits,
            },
            guard: config.guard,
            cache,
            hasher: PasswordHasher::new(config.bcrypt_cost),
            issuer: issuer(config, aws, wiring.needs.sign),
            verifier: config
                .public_keys
                .as_ref()
                .map(|keys| Arc::new(TokenVerifier::new(keys, &config.token))),
            health_timeout: config.health_timeout,
            catalogue: zx_products::CatalogueSettings {
                ttl: config.cache_ttl,
                index_lag: config.index_lag,
                sold_out_ttl: config.sold_out_ttl,
            },
            sender: (wiring.sender)(config, aws, wiring.needs.sends),
            destinations: config.destinations.clone(),
            notifier: notifier(config, aws, wiring.needs.notify),
            saga: config.saga,
        })
    }

    /// The saga's use cases' dependencies, for the functions that place or move orders.
    pub fn saga(&self) -> Result<zx_orders::Saga, ConfigError> {
        // What the function does not use is a stand-in that refuses (crate::unwired).
        Ok(zx_orders::Saga {
            orders: self
                .stores
                .orders
                .clone()
                .unwrap_or_else(|| Arc::new(Unwired("orders"))),
            outbox: self
                .stores
                .outbox
                .clone()
                .unwrap_or_else(|| Arc::new(Unwired("outbox"))),
            catalogue: match &self.stores.products {
                Some(products) => products.clone(),
                None => Arc::new(Unwired("products")),
            },
            inventory: self
                .stores
                .inventory
                .clone()
                .unwrap_or_else(|| Arc::new(Unwired("inventory"))),
            sender: self
                .sender
                .clone()
                .ok_or(ConfigError::Missing("INVENTORY_QUEUE_URL"))?,
            views: self
                .catalogue_cache()
                .map(|cache| Arc::new(cache) as Arc<dyn zx_orders::StaleViews>),
            settings: self.saga,
        })
    }

    /// These services cut down to `needs`, as one function's cold start would build them:
    /// the local gateway runs every function through this, so a function that uses what it
    /// does not declare fails in the end-to-end tests (it would lack the IAM grant on AWS).
    pub fn restricted(&self, needs: &Needs) -> Services {
        fn keep<T: ?Sized>(store: &Option<Arc<T>>, usage: Use) -> Option<Arc<T>> {
            store.clone().filter(|_| usage.any())
        }
        let mut services = self.clone();
        services.stores = Stores {
            users: keep(&self.stores.users, needs.users),
            sessions: self
                .stores
                .sessions
                .clone()
                .filter(|_| needs.sessions.any()),
            products: keep(&self.stores.products, needs.products),
            inventory: keep(&self.stores.inventory, needs.inventory),
            orders: keep(&self.stores.orders, needs.orders),
            outbox: keep(&self.stores.outbox, needs.outbox),
            checks: if needs.health {
                self.stores.checks.clone()
            } else {
                Vec::new()
            },
        };
        crate::unwired::read_only_where_declared(&mut services.stores, needs);
        if !needs.cache {
            services.cache = None;
            services.limits.limiter = None;
        }
        if !needs.sign {
            services.issuer = None;
        }
        if !needs.notify {
            services.notifier = None;
        }
        services.sender = self
            .sender
            .clone()
            .filter(|_| needs.sends.any())
            .map(|inner| crate::unwired::RestrictedSender::wrap(inner, needs.sends));
        services
    }

    /// The limits that guard passwords (login, register, `currentPassword`). They fail closed,
    /// so a function that checks passwords does not start without a cache to count in.
    pub fn password_guard(&self) -> Result<zx_users::PasswordGuard, ConfigError> {
        let limiter = self
            .limits
            .limiter
            .clone()
            .ok_or(ConfigError::Missing("CACHE_URL"))?;
        let accounts = zx_cache::AccountGuard::new(limiter.cache().clone(), self.guard);
        Ok(zx_users::PasswordGuard::new(
            limiter,
            self.limits.limits,
            accounts,
        ))
    }

    /// The account notifier, for the function that changes e-mails.
    pub fn notifier(&self) -> Result<Arc<dyn Notifier>, ConfigError> {
        self.notifier
            .clone()
            .ok_or(ConfigError::Missing("ACCOUNT_NOTICES_TOPIC_ARN"))
    }

    /// The token issuer, for the functions that sign tokens.
    pub fn issuer(&self) -> Result<Arc<TokenIssuer>, ConfigError> {
        self.issuer
            .clone()
            .ok_or(ConfigError::Missing("JWT_SIGNING_KEY_ID"))
    }

    /// The token verifier, for every function that reads bearer tokens.
    pub fn verifier(&self) -> Result<Arc<TokenVerifier>, ConfigError> {
        self.verifier
            .clone()
            .ok_or(ConfigError::Missing("JWT_PUBLIC_KEYS"))
    }

    /// The catalogue's view of the cache, when there is a cache.
    pub fn catalogue_cache(&self) -> Option<zx_products::CatalogueCache> {
        self.cache
            .clone()
            .map(|cache| zx_products::CatalogueCache::new(cache, self.catalogue))
    }

    /// Every health check: the stores', then the cache's.
    pub fn health_checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        let mut checks = self.stores.checks.clone();
        if let Some(cache) = &self.cache {
            checks.push(Arc::new(CacheCheck {
                cache: cache.clone(),
            }));
        }
        checks
    }
}

/// Cold start of an API function: JSON logging, configuration, services. A configuration error
/// is logged and returned, so the function refuses to start with a message naming the variable.
pub async fn start(wiring: &Wiring) -> Result<Services, ConfigError> {
    zx_http::init_tracing();
    let built = match Config::from_env() {
        Ok(config) => Services::build_wired(&config, &lambda_aws_config(), wiring).await,
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
    let services = start(&function.wiring).await?;
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

/// What every invocation does before its handler: a database token renewed when due (with
/// `DATABASE_IAM_AUTH`; nothing otherwise).
pub async fn before_invocation() {
    #[cfg(feature = "postgres")]
    crate::rds_iam::refresh_due_tokens().await;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_elasticache::config::Credentials;

    use super::*;
    use crate::config::Source;
    use crate::discovery::tests::{not_found, replay};

    #[tokio::test]
    async fn an_unknown_cache_name_stops_the_cold_start_naming_cache_name() {
        let config = Config::from_source(&Source::map(HashMap::from([(
            "CACHE_NAME".to_owned(),
            "no-such-cache".to_owned(),
        )])))
        .unwrap();
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .http_client(replay(&[
                not_found("ServerlessCacheNotFoundFault"),
                not_found("ReplicationGroupNotFoundFault"),
            ]))
            .load()
            .await;
        let error = build_cache(&config, &aws).await.unwrap_err().to_string();
        assert_eq!(
            error,
            "CACHE_NAME is invalid: no ElastiCache serverless cache or replication group is named \"no-such-cache\""
        );
    }

    #[tokio::test]
    async fn cache_url_wins_over_cache_name_without_any_api_call() {
        let config = Config::from_source(&Source::map(HashMap::from([
            ("CACHE_URL".to_owned(), "redis://127.0.0.1:6379".to_owned()),
            ("CACHE_NAME".to_owned(), "ignored".to_owned()),
        ])))
        .unwrap();
        let http = replay(&[]);
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .http_client(http.clone())
            .load()
            .await;
        assert!(build_cache(&config, &aws).await.unwrap().is_some());
        assert_eq!(http.actual_requests().count(), 0);
    }
}
