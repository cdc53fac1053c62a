//! Builds the adapters once per cold start. Nothing here does network I/O: the SDK client,
//! the Postgres pool and the cache connect on first use.

use std::sync::Arc;

use zx_auth::{PasswordHasher, TokenIssuer, TokenVerifier};
use zx_cache::Cache;
use zx_domain::{
    InventoryRepository, MessageSender, OrderRepository, Outbox, ProductRepository, UserRepository,
};
use zx_store_dynamodb::{DynamoOrderRepository, DynamoProductRepository, DynamoUserRepository};
use zx_store_postgres::{PgOrderRepository, PgProductRepository, PgUserRepository};

use crate::health::{CacheCheck, DynamoCheck, HealthCheck, PostgresCheck};
use crate::{Config, ConfigError, StoreKind};

/// The repositories of the configured backend, and health checks for every configured store.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserRepository>,
    pub products: Arc<dyn ProductRepository>,
    pub orders: Arc<dyn OrderRepository>,
    pub outbox: Arc<dyn Outbox>,
    pub inventory: Arc<dyn InventoryRepository>,
    pub checks: Vec<Arc<dyn HealthCheck>>,
}

/// Every repository of one backend (one value per instance, shared by the trait objects).
fn repositories<U, P, O>(users: U, products: P, orders: O) -> Stores
where
    U: UserRepository + 'static,
    P: ProductRepository + InventoryRepository + 'static,
    O: OrderRepository + Outbox + 'static,
{
    let products = Arc::new(products);
    let orders = Arc::new(orders);
    Stores {
        users: Arc::new(users),
        products: products.clone(),
        orders: orders.clone(),
        outbox: orders,
        inventory: products,
        checks: Vec::new(),
    }
}

/// Loads the AWS configuration (region, credentials chain, `AWS_ENDPOINT_URL*`) once.
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

/// Builds the repositories for `config.store`. DynamoDB is always checked by health when it is
/// the store; Postgres is checked whenever `DATABASE_URL` is set, and required when it is the
/// store. One Postgres pool serves both schemas: at most `PG_MAX_CONNECTIONS` per instance.
pub async fn build_stores(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> Result<Stores, ConfigError> {
    let mut checks: Vec<Arc<dyn HealthCheck>> = Vec::new();
    let pool = config
        .database_url
        .as_ref()
        .map(|url| {
            zx_store_postgres::connect_lazy(url.expose(), &config.pool).map_err(|e| {
                ConfigError::Invalid {
                    var: "DATABASE_URL",
                    reason: e.to_string(),
                }
            })
        })
        .transpose()?;
    let mut stores = match (config.store, &pool) {
        (StoreKind::DynamoDb, _) => {
            let client = dynamodb_client(config, aws);
            checks.push(Arc::new(DynamoCheck {
                client: client.clone(),
                tables: vec![
                    config.users_table.clone(),
                    config.products_table.clone(),
                    config.orders_table.clone(),
                ],
            }));
            repositories(
                DynamoUserRepository::new(client.clone(), config.users_table.clone()),
                DynamoProductRepository::new(client.clone(), config.products_table.clone()),
                DynamoOrderRepository::new(client, config.orders_table.clone()),
            )
        }
        (StoreKind::Postgres, Some(pool)) => repositories(
            PgUserRepository::new(pool.clone(), &config.users_schema),
            PgProductRepository::new(pool.clone(), &config.products_schema),
            PgOrderRepository::new(pool.clone(), &config.orders_schema),
        ),
        (StoreKind::Postgres, None) => return Err(ConfigError::Missing("DATABASE_URL")),
    };
    if let Some(pool) = pool {
        checks.push(Arc::new(PostgresCheck {
            pool,
            required: config.store == StoreKind::Postgres,
        }));
    }
    stores.checks = checks;
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
    pub catalogue: zx_products::CatalogueSettings,
    /// Present when the queues and the topic are configured.
    pub sender: Option<Arc<dyn MessageSender>>,
    /// Where messages go (the local gateway polls these queues).
    pub destinations: Option<zx_messaging::Destinations>,
    pub saga: zx_orders::usecases::SagaSettings,
}

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
        let cache = build_cache(config, aws).await?;
        Ok(Self {
            stores: build_stores(config, aws).await?,
            limits: zx_cache::ClientLimits {
                limiter: cache.clone().map(zx_cache::RateLimiter::new),
                limits: config.rate_limits,
            },
            cache,
            hasher: PasswordHasher::new(config.bcrypt_cost),
            issuer: config
                .signing_key
                .as_ref()
                .map(|key| Arc::new(TokenIssuer::new(key, config.token.clone()))),
            verifier: config
                .public_keys
                .as_ref()
                .map(|keys| Arc::new(TokenVerifier::new(keys, &config.token))),
            health_timeout: config.health_timeout,
            catalogue: zx_products::CatalogueSettings {
                ttl: config.cache_ttl,
                index_lag: config.index_lag,
            },
            sender: config.destinations.clone().map(|destinations| {
                // Every send bounded like a store call: a destination that does not answer
                // fails the send (the message stays in the outbox), never the Lambda timeout.
                let timeouts = sdk_timeouts(config);
                Arc::new(zx_messaging::AwsSender::new(
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
                )) as Arc<dyn MessageSender>
            }),
            destinations: config.destinations.clone(),
            saga: config.saga,
        })
    }

    /// The saga's use cases' dependencies, for the functions that place or move orders.
    pub fn saga(&self) -> Result<zx_orders::Saga, ConfigError> {
        Ok(zx_orders::Saga {
            orders: self.stores.orders.clone(),
            outbox: self.stores.outbox.clone(),
            catalogue: self.stores.products.clone(),
            inventory: self.stores.inventory.clone(),
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

    /// The token issuer, for the function that signs tokens.
    pub fn issuer(&self) -> Result<Arc<TokenIssuer>, ConfigError> {
        self.issuer
            .clone()
            .ok_or(ConfigError::Missing("JWT_PRIVATE_KEY"))
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
pub async fn start() -> Result<Services, ConfigError> {
    zx_http::init_tracing();
    let built = match Config::from_env() {
        Ok(config) => Services::build(&config).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &built {
        tracing::error!(%error, "refusing to start: invalid configuration");
    }
    built
}

/// A function's `main`: cold start, build its handler with `build` (the same builder the local
/// gateway calls), then serve Lambda invocations.
pub async fn run_http(build: crate::functions::Builder) -> Result<(), lambda_http::Error> {
    let services = start().await?;
    let handler = build(&services).inspect_err(|error| {
        tracing::error!(%error, "refusing to start: invalid configuration");
    })?;
    drop(services);
    zx_http::run(handler).await
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
