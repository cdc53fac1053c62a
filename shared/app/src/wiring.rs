//! Builds the adapters once per cold start. Nothing here does network I/O: the SDK client,
//! the Postgres pool and the cache connect on first use.

use std::sync::Arc;

use zx_auth::{PasswordHasher, TokenService};
use zx_cache::Cache;
use zx_domain::{ProductRepository, UserRepository};
use zx_store_dynamodb::{DynamoProductRepository, DynamoUserRepository};
use zx_store_postgres::{PgProductRepository, PgUserRepository};

use crate::health::{CacheCheck, DynamoCheck, HealthCheck, PostgresCheck};
use crate::{Config, ConfigError, StoreKind};

/// The repositories of the configured backend, and health checks for every configured store.
#[derive(Clone)]
pub struct Stores {
    pub users: Arc<dyn UserRepository>,
    pub products: Arc<dyn ProductRepository>,
    pub checks: Vec<Arc<dyn HealthCheck>>,
}

/// Loads the AWS configuration (region, credentials chain, `AWS_ENDPOINT_URL*`) once.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}

/// Builds the repositories for `config.store`. DynamoDB is always checked by health when it is
/// the store; Postgres is checked whenever `DATABASE_URL` is set, and required when it is the store.
pub async fn build_stores(
    config: &Config,
    aws: &aws_config::SdkConfig,
) -> Result<Stores, ConfigError> {
    let mut checks: Vec<Arc<dyn HealthCheck>> = Vec::new();
    let pool = |schema| {
        config
            .database_url
            .as_ref()
            .map(|url| {
                zx_store_postgres::connect_lazy(url.expose(), schema, &config.pool).map_err(|e| {
                    ConfigError::Invalid {
                        var: "DATABASE_URL",
                        reason: e.to_string(),
                    }
                })
            })
            .transpose()
    };
    let users_pool = pool(&config.users_schema)?;
    let products_pool = pool(&config.products_schema)?;
    let (users, products): (Arc<dyn UserRepository>, Arc<dyn ProductRepository>) =
        match config.store {
            StoreKind::DynamoDb => {
                let client = aws_sdk_dynamodb::Client::new(aws);
                checks.push(Arc::new(DynamoCheck {
                    client: client.clone(),
                    tables: vec![config.users_table.clone(), config.products_table.clone()],
                }));
                (
                    Arc::new(DynamoUserRepository::new(
                        client.clone(),
                        config.users_table.clone(),
                    )),
                    Arc::new(DynamoProductRepository::new(
                        client,
                        config.products_table.clone(),
                    )),
                )
            }
            StoreKind::Postgres => {
                let missing = || ConfigError::Missing("DATABASE_URL");
                (
                    Arc::new(PgUserRepository::new(
                        users_pool.clone().ok_or_else(missing)?,
                    )),
                    Arc::new(PgProductRepository::new(products_pool.ok_or_else(missing)?)),
                )
            }
        };
    if let Some(pool) = users_pool {
        checks.push(Arc::new(PostgresCheck {
            pool,
            required: config.store == StoreKind::Postgres,
        }));
    }
    Ok(Stores {
        users,
        products,
        checks,
    })
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

/// Everything the API functions use, built once. Each function's `main` takes what it needs;
/// the local gateway builds it whole.
#[derive(Clone)]
pub struct Services {
    pub stores: Stores,
    pub cache: Option<Cache>,
    pub hasher: PasswordHasher,
    pub tokens: Option<Arc<TokenService>>,
    pub health_timeout: std::time::Duration,
    /// Per-client limits, enforced when the cache is configured.
    pub limits: zx_cache::ClientLimits,
}

impl Services {
    /// Builds every service with the AWS configuration of the environment. A required but
    /// invalid `JWT_SECRET` is refused before anything else is built.
    pub async fn build(config: &Config, require_tokens: bool) -> Result<Self, ConfigError> {
        if require_tokens {
            config.token_settings()?;
        }
        Self::build_with_aws(config, require_tokens, &aws_config().await).await
    }

    /// Builds every service; `tokens` only when `require_tokens` (or a secret is configured).
    pub async fn build_with_aws(
        config: &Config,
        require_tokens: bool,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, ConfigError> {
        let tokens = match config.token_settings() {
            Ok(settings) => Some(Arc::new(TokenService::new(settings))),
            Err(error) if require_tokens => return Err(error),
            Err(_) => None,
        };
        let cache = build_cache(config, aws).await?;
        Ok(Self {
            stores: build_stores(config, aws).await?,
            limits: zx_cache::ClientLimits {
                limiter: cache.clone().map(zx_cache::RateLimiter::new),
                limits: config.rate_limits,
            },
            cache,
            hasher: PasswordHasher::new(config.bcrypt_cost),
            tokens,
            health_timeout: config.health_timeout,
        })
    }

    /// The token service; present whenever `build` was asked to require it.
    pub fn tokens(&self) -> Result<&TokenService, ConfigError> {
        self.tokens
            .as_deref()
            .ok_or(ConfigError::Missing("JWT_SECRET"))
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
pub async fn start(require_tokens: bool) -> Result<Services, ConfigError> {
    zx_http::init_tracing();
    let built = match Config::from_env() {
        Ok(config) => Services::build(&config, require_tokens).await,
        Err(error) => Err(error),
    };
    if let Err(error) = &built {
        tracing::error!(%error, "refusing to start: invalid configuration");
    }
    built
}

/// Cold start of a function that only verifies tokens (`authorizer`, `users-validate`): no
/// store, no cache, no AWS configuration, so none of them is linked in or initialised.
pub fn start_token_service() -> Result<TokenService, ConfigError> {
    zx_http::init_tracing();
    let settings = Config::from_env().and_then(|config| config.token_settings());
    match settings {
        Ok(settings) => Ok(TokenService::new(settings)),
        Err(error) => {
            tracing::error!(%error, "refusing to start: invalid configuration");
            Err(error)
        }
    }
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
