//! The backend of one cold start: configuration, SDK clients, the Postgres pool and the cache,
//! built once without network I/O except `CACHE_NAME`'s discovery (one ElastiCache call) and,
//! with `DATABASE_IAM_AUTH`, the first database token. [`Services`] hands out one adapter per
//! port on request (`crate::ports`): what a function's ports do not ask for is never built, and
//! a function's binary links only the adapters its ports name. The Postgres adapter is linked
//! only with the `postgres` feature (a `Store=postgres` build).

use std::sync::Arc;

use async_trait::async_trait;
use zx_auth::{PasswordHasher, TokenIssuer, TokenVerifier};
use zx_cache::Cache;
use zx_domain::{
    Destination, InventoryStore, MessageSender, Notifier, OrderRepository, Outbox, OutboxMessage,
    ProductRepository, RepositoryError, SessionRepository, UserRepository,
};
use zx_store_dynamodb::{
    DynamoOrderRepository, DynamoProductRepository, DynamoSessionRepository, DynamoUserRepository,
};

use crate::capabilities::{Needs, Sends};
use crate::health::{CacheCheck, DynamoCheck, HealthCheck};
use crate::{Config, ConfigError, StoreKind};

/// The configured backend's connections (lazy), shared by the adapters built on it.
struct Backend {
    config: Config,
    dynamodb: Option<aws_sdk_dynamodb::Client>,
    #[cfg(feature = "postgres")]
    pool: Option<sqlx::PgPool>,
}

impl Backend {
    /// The backend of `config.store`: a DynamoDB client, or a lazy Postgres pool (one pool
    /// serves every schema: at most `PG_MAX_CONNECTIONS` per instance). With DynamoDB as the
    /// store, a configured `DATABASE_URL` is still checked by health.
    fn new(
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

/// The adapter of the configured store for `$trait`: `$dynamo` over the DynamoDB client and
/// `config`, or `$pg` over the Postgres pool and `config` (with the `postgres` feature).
macro_rules! repository {
    ($backend:expr, $name:literal, $trait:ty, |$client:ident, $config:ident| $dynamo:expr, |$pool:ident| $pg:expr) => {{
        let backend: &Backend = $backend;
        let $config = &backend.config;
        match (&backend.dynamodb, $config.store) {
            (Some($client), StoreKind::DynamoDb) => {
                let $client = $client.clone();
                Ok(Arc::new($dynamo) as Arc<$trait>)
            }
            #[cfg(feature = "postgres")]
            (_, StoreKind::Postgres) => backend
                .pool
                .clone()
                .map(|$pool| Arc::new($pg) as Arc<$trait>)
                .ok_or(ConfigError::NotWired($name)),
            _ => Err(ConfigError::NotWired($name)),
        }
    }};
}

/// Adapters the tests put in place of the backend's (fault injectors: a lagging index, a
/// client that counts calls, a sender through a proxy that can be cut). Empty in functions.
#[derive(Clone, Default)]
pub struct Substitutes {
    pub users: Option<Arc<dyn UserRepository>>,
    pub products: Option<Arc<dyn ProductRepository>>,
    pub sender: Option<Arc<dyn MessageSender>>,
}

/// Everything one cold start built, from which each port takes its part (`crate::ports`): the
/// function's builder wires its ports from it, and the local gateway builds one with everything
/// and hands it to every builder.
#[derive(Clone)]
pub struct Services {
    backend: Arc<Backend>,
    aws: aws_config::SdkConfig,
    pub cache: Option<Cache>,
    pub hasher: PasswordHasher,
    /// Present when `JWT_PUBLIC_KEYS` is configured.
    pub verifier: Option<Arc<TokenVerifier>>,
    pub health_timeout: std::time::Duration,
    /// Per-client limits, enforced when the cache is configured.
    pub limits: zx_cache::ClientLimits,
    /// Per-account limits on wrong passwords.
    pub guard: zx_cache::GuardSettings,
    pub catalogue: zx_products::CatalogueSettings,
    /// Where messages go (the local gateway polls these queues).
    pub destinations: Option<zx_messaging::Destinations>,
    pub saga: zx_orders::usecases::SagaSettings,
    pub substitutes: Substitutes,
}

impl Services {
    /// Builds everything with the AWS configuration of the environment (operators' tools).
    pub async fn build(config: &Config) -> Result<Self, ConfigError> {
        Self::build_with_aws(config, &aws_config().await).await
    }

    /// Builds everything with a given AWS configuration: the local gateway and the tests, which
    /// run every function in one process.
    pub async fn build_with_aws(
        config: &Config,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ConfigError> {
        Self::build_for(config, aws, &Needs::ALL).await
    }

    /// Builds what `needs` ask for (one function's cold start): the cache only when needed, a
    /// DynamoDB client or Postgres pool only when a store is.
    pub async fn build_for(
        config: &Config,
        aws: &aws_config::SdkConfig,
        needs: &Needs,
    ) -> Result<Self, ConfigError> {
        let cache = if needs.cache {
            build_cache(config, aws).await?
        } else {
            None
        };
        let backend = Backend::new(config, aws, needs)?;
        // The first database token, before any query (IAM authentication only).
        before_invocation().await;
        Ok(Self {
            backend: Arc::new(backend),
            aws: aws.clone(),
            limits: zx_cache::ClientLimits {
                limiter: cache.clone().map(zx_cache::RateLimiter::new),
                limits: config.rate_limits,
            },
            guard: config.guard,
            cache,
            hasher: PasswordHasher::new(config.bcrypt_cost),
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
            destinations: config.destinations.clone(),
            saga: config.saga,
            substitutes: Substitutes::default(),
        })
    }

    fn config(&self) -> &Config {
        &self.backend.config
    }

    pub fn users(&self) -> Result<Arc<dyn UserRepository>, ConfigError> {
        if let Some(users) = &self.substitutes.users {
            return Ok(users.clone());
        }
        repository!(
            &self.backend,
            "users",
            dyn UserRepository,
            |client, config| DynamoUserRepository::new(client, config.users_table.clone()),
            |pool| zx_store_postgres::PgUserRepository::new(pool, &config.users_schema)
        )
    }

    pub fn sessions(&self) -> Result<Arc<dyn SessionRepository>, ConfigError> {
        repository!(
            &self.backend,
            "sessions",
            dyn SessionRepository,
            |client, config| DynamoSessionRepository::new(client, config.users_table.clone()),
            |pool| zx_store_postgres::PgSessionRepository::new(pool, &config.users_schema)
        )
    }

    pub fn products(&self) -> Result<Arc<dyn ProductRepository>, ConfigError> {
        if let Some(products) = &self.substitutes.products {
            return Ok(products.clone());
        }
        repository!(
            &self.backend,
            "products",
            dyn ProductRepository,
            |client, config| DynamoProductRepository::new(client, config.products_table.clone()),
            |pool| zx_store_postgres::PgProductRepository::new(pool, &config.products_schema)
        )
    }

    pub fn inventory(&self) -> Result<Arc<dyn InventoryStore>, ConfigError> {
        repository!(
            &self.backend,
            "inventory",
            dyn InventoryStore,
            |client, config| DynamoProductRepository::new(client, config.products_table.clone()),
            |pool| zx_store_postgres::PgProductRepository::new(pool, &config.products_schema)
        )
    }

    pub fn orders(&self) -> Result<Arc<dyn OrderRepository>, ConfigError> {
        repository!(
            &self.backend,
            "orders",
            dyn OrderRepository,
            |client, config| DynamoOrderRepository::new(client, config.orders_table.clone()),
            |pool| zx_store_postgres::PgOrderRepository::new(pool, &config.orders_schema)
        )
    }

    pub fn outbox(&self) -> Result<Arc<dyn Outbox>, ConfigError> {
        repository!(
            &self.backend,
            "outbox",
            dyn Outbox,
            |client, config| DynamoOrderRepository::new(client, config.orders_table.clone()),
            |pool| zx_store_postgres::PgOrderRepository::new(pool, &config.orders_schema)
        )
    }

    /// A sender to the destinations of `sends` only (the others it is not granted).
    pub fn sender(&self, sends: Sends) -> Result<Arc<dyn MessageSender>, ConfigError> {
        let inner = match &self.substitutes.sender {
            Some(sender) => sender.clone(),
            None => {
                let config = self.config();
                let destinations = config
                    .destinations
                    .clone()
                    .ok_or(ConfigError::Missing("INVENTORY_QUEUE_URL"))?;
                // Every send bounded like a store call: a destination that does not answer
                // fails the send (the message stays in the outbox), never the Lambda timeout.
                let timeouts = sdk_timeouts(config);
                Arc::new(zx_messaging::AwsSender::new(
                    aws_sdk_sqs::Client::from_conf(
                        aws_sdk_sqs::config::Builder::from(&self.aws)
                            .timeout_config(timeouts.clone())
                            .build(),
                    ),
                    aws_sdk_sns::Client::from_conf(
                        aws_sdk_sns::config::Builder::from(&self.aws)
                            .timeout_config(timeouts)
                            .build(),
                    ),
                    destinations,
                ))
            }
        };
        Ok(Arc::new(RestrictedSender { inner, sends }))
    }

    /// The token issuer: KMS when `JWT_SIGNING_KEY_ID` is set, else the in-memory
    /// `JWT_PRIVATE_KEY` (tests and tools).
    pub fn issuer(&self) -> Result<Arc<TokenIssuer>, ConfigError> {
        let config = self.config();
        if let Some(key_id) = &config.signing_key_id {
            let signer = crate::kms::KmsSigner::new(&self.aws, key_id.clone());
            return Ok(Arc::new(TokenIssuer::remote(
                Arc::new(signer),
                config.token.clone(),
            )));
        }
        config
            .signing_key
            .as_ref()
            .map(|key| Arc::new(TokenIssuer::new(key, config.token.clone())))
            .ok_or(ConfigError::Missing("JWT_SIGNING_KEY_ID"))
    }

    /// The account notifier (an e-mail change's code), at `ACCOUNT_NOTICES_TOPIC_ARN`.
    pub fn notifier(&self) -> Result<Arc<dyn Notifier>, ConfigError> {
        let config = self.config();
        let topic = config
            .account_notices_topic_arn
            .clone()
            .ok_or(ConfigError::Missing("ACCOUNT_NOTICES_TOPIC_ARN"))?;
        let sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::config::Builder::from(&self.aws)
                .timeout_config(sdk_timeouts(config))
                .build(),
        );
        Ok(Arc::new(zx_messaging::SnsNotifier::new(sns, topic)))
    }

    /// The token verifier, for every function that reads bearer tokens.
    pub fn verifier(&self) -> Result<Arc<TokenVerifier>, ConfigError> {
        self.verifier
            .clone()
            .ok_or(ConfigError::Missing("JWT_PUBLIC_KEYS"))
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

    /// The catalogue's view of the cache, when there is a cache.
    pub fn catalogue_cache(&self) -> Option<zx_products::CatalogueCache> {
        self.cache
            .clone()
            .map(|cache| zx_products::CatalogueCache::new(cache, self.catalogue))
    }

    /// Every health check: DynamoDB when it is the store; Postgres whenever `DATABASE_URL` is
    /// set, and required when it is the store; then the cache.
    pub fn health_checks(&self) -> Vec<Arc<dyn HealthCheck>> {
        let backend = &self.backend;
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
        if let Some(cache) = &self.cache {
            checks.push(Arc::new(CacheCheck {
                cache: cache.clone(),
            }));
        }
        checks
    }
}

/// The one guard that stays at run time: the relay (and a transition) sends by each message's
/// destination, so a sender sends only where its port's destinations allow (the others it is
/// not granted) and says so in `sends_to`, which leaves the rest in the outbox.
struct RestrictedSender {
    inner: Arc<dyn MessageSender>,
    sends: Sends,
}

#[async_trait]
impl MessageSender for RestrictedSender {
    async fn send(&self, message: &OutboxMessage) -> Result<(), RepositoryError> {
        if self.sends.includes(message.destination) {
            self.inner.send(message).await
        } else {
            Err(refuse_destination(message.destination))
        }
    }

    async fn send_batch(&self, messages: &[OutboxMessage]) -> Vec<Result<(), RepositoryError>> {
        if messages.iter().all(|m| self.sends.includes(m.destination)) {
            return self.inner.send_batch(messages).await;
        }
        messages
            .iter()
            .map(|m| Err(refuse_destination(m.destination)))
            .collect()
    }

    fn sends_to(&self, destination: Destination) -> bool {
        self.sends.includes(destination) && self.inner.sends_to(destination)
    }

    async fn dead_letter(
        &self,
        source: Destination,
        body: &str,
        reason: &str,
    ) -> Result<(), RepositoryError> {
        let allowed = match source {
            Destination::InventoryQueue => self.sends.inventory_dlq,
            Destination::OrderQueue => self.sends.order_dlq,
            Destination::OrderEvents => false,
        };
        if allowed {
            self.inner.dead_letter(source, body, reason).await
        } else {
            Err(RepositoryError::Failed {
                operation: "send",
                source: format!(
                    "this function does not send to the dead-letter queue of {source:?}"
                )
                .into(),
            })
        }
    }
}

fn refuse_destination(destination: Destination) -> RepositoryError {
    RepositoryError::Failed {
        operation: "send",
        source: format!("this function does not send to {destination:?}").into(),
    }
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

/// What every invocation does before its handler, and a cold start before its first: a
/// database token renewed when due (with `DATABASE_IAM_AUTH`; nothing otherwise).
pub async fn before_invocation() {
    #[cfg(feature = "postgres")]
    crate::rds_iam::refresh_due_tokens().await;
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
