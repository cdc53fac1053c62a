//! Cache-aside for catalogue reads, keyed by generations so invalidation is race-free:
//! a product's entries live under `product:<id>:g<n>` and listings under
//! `products:g<n>:<query>`; every change INCRs the product's and the catalogue's generation, so
//! a reader that fetched the old generation before the write can only fill a key nobody reads
//! any more (it expires with the TTL). A cache that is down or slow is skipped with a warning.

use std::time::Duration;

use zx_cache::{Cache, CacheError};
use zx_domain::ProductId;

/// Seed value: entries live 10 minutes.
pub const TTL: Duration = Duration::from_secs(600);

const CATALOGUE_GENERATION: &str = "products:gen";

fn product_generation(id: &ProductId) -> String {
    format!("product:{id}:gen")
}

/// The outcome of a lookup: the cached body, and the key to fill after a miss (none when the
/// cache could not be asked).
#[derive(Debug, Default)]
pub struct Lookup {
    pub hit: Option<String>,
    pub key: Option<String>,
}

/// The catalogue's view of the cache.
#[derive(Debug, Clone)]
pub struct CatalogueCache {
    cache: Cache,
    ttl: Duration,
}

fn warn(operation: &str, error: &CacheError) {
    match error {
        CacheError::Skipped => tracing::debug!(operation, "cache skipped (recent failure)"),
        error => tracing::warn!(operation, %error, "cache unavailable; serving from the store"),
    }
}

impl CatalogueCache {
    pub fn new(cache: Cache) -> Self {
        Self { cache, ttl: TTL }
    }

    async fn generation(&self, key: &str) -> Result<i64, CacheError> {
        let value = self.cache.get(key).await?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    async fn lookup(&self, generation_key: &str, entry: impl FnOnce(i64) -> String) -> Lookup {
        let generation = match self.generation(generation_key).await {
            Ok(generation) => generation,
            Err(error) => {
                warn("read generation", &error);
                return Lookup::default();
            }
        };
        let key = entry(generation);
        match self.cache.get(&key).await {
            Ok(hit) => Lookup {
                hit,
                key: Some(key),
            },
            Err(error) => {
                warn("read entry", &error);
                Lookup::default()
            }
        }
    }

    /// The cached `GET /products/{id}` body.
    pub async fn product(&self, id: &ProductId) -> Lookup {
        self.lookup(&product_generation(id), |g| format!("product:{id}:g{g}"))
            .await
    }

    /// The cached `GET /products` body for a canonical query.
    pub async fn listing(&self, canonical_query: &str) -> Lookup {
        self.lookup(CATALOGUE_GENERATION, |g| {
            format!("products:g{g}:{canonical_query}")
        })
        .await
    }

    /// Fills the key a lookup missed.
    pub async fn fill(&self, lookup: &Lookup, body: &str) {
        if let Some(key) = &lookup.key
            && let Err(error) = self.cache.set_ex(key, body, self.ttl).await
        {
            warn("fill entry", &error);
        }
    }

    /// Makes every cached read of this product, and every cached listing, unreachable (both
    /// generations in one round trip).
    pub async fn invalidate(&self, id: &ProductId) {
        if let Err(error) = self
            .cache
            .incr_all(&[&product_generation(id), CATALOGUE_GENERATION])
            .await
        {
            tracing::error!(%error, product_id = %id, "cache invalidation failed: reads may be stale for up to the TTL");
        }
    }

    /// Makes every cached listing unreachable (a new product appears in them).
    pub async fn invalidate_listings(&self) {
        if let Err(error) = self.cache.incr(CATALOGUE_GENERATION).await {
            tracing::error!(%error, "cache invalidation failed: listings may be stale for up to the TTL");
        }
    }
}
