//! Cache-aside for catalogue reads, keyed by generations so invalidation is race-free.
//!
//! - A product's body lives under `product:<id>:g<n>`, `n` from `product:<id>:gen`.
//! - A listing page holds only the ids of its products (and the next cursor), under
//!   `products:g<n>:<query>`, `n` from `products:gen`; its items are the products' own
//!   entries. So a stock change (which only changes the product's body) bumps that product's
//!   generation and no listing; a catalogue change (which can move a product in or out of
//!   listings) bumps both.
//! - Listings come from an index that may lag behind the table. Every write stamps
//!   `products:written`; a listing page read within `index_lag` of it is served but not
//!   cached, and its items are always the products' strongly consistent state, so no read
//!   after a write returns serves the pre-write value, and no page of pre-write membership is
//!   cached for later.
//! - A reader that fetched an old generation before a write can only fill a key nobody reads
//!   any more. A cache that is down or slow is skipped with a warning; an invalidation is
//!   always attempted (the breaker never skips it), and a failed one is logged at error level:
//!   entries then stay reachable for at most the TTL.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zx_cache::{Cache, CacheError};
use zx_domain::{ProductId, Timestamp};

/// Cache settings of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogueSettings {
    /// How long entries live (seed: 600 s): the bound on staleness after an invalidation that
    /// could not reach the cache.
    pub ttl: Duration,
    /// How long after a catalogue write listing pages are not cached.
    pub index_lag: Duration,
    /// How long a product is known to be sold out (set by the inventory worker when a batch
    /// leaves it without available units, cleared when stock comes back): the bound on a false
    /// sold-out when the clearing cannot reach the cache.
    pub sold_out_ttl: Duration,
}

impl Default for CatalogueSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(600),
            index_lag: Duration::from_secs(2),
            sold_out_ttl: Duration::from_secs(10),
        }
    }
}

fn sold_out_key(id: &ProductId) -> String {
    format!("soldout:{id}")
}

const CATALOGUE_GENERATION: &str = "products:gen";
const CATALOGUE_WRITTEN: &str = "products:written";

fn product_generation(id: &ProductId) -> String {
    format!("product:{id}:gen")
}

fn generation_of(value: Option<&String>) -> i64 {
    value.and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The outcome of a lookup: the cached body, and the key to fill after a miss (none when the
/// cache could not be asked, or must not be filled).
#[derive(Debug, Default)]
pub struct Lookup {
    pub hit: Option<String>,
    pub key: Option<String>,
}

/// A cached listing page: which products, in order, and where the next page starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedPage {
    pub ids: Vec<String>,
    pub next: Option<String>,
}

/// The catalogue's view of the cache.
#[derive(Debug, Clone)]
pub struct CatalogueCache {
    cache: Cache,
    settings: CatalogueSettings,
}

fn warn(operation: &str, error: &CacheError) {
    match error {
        CacheError::Skipped => tracing::debug!(operation, "cache skipped (recent failure)"),
        error => tracing::warn!(operation, %error, "cache unavailable; serving from the store"),
    }
}

/// Whether a write changed what listings show (and so stamps the catalogue: listings are not
/// cached while the index catches up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listings {
    Changed,
    Unchanged,
}

/// Cache hits and misses (a read the cache could not answer is a miss: the store answers).
fn count_lookups(hits: usize, misses: usize) {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    if hits > 0 {
        metrics::counter!(zx_domain::metrics::CACHE_HITS).increment(count(hits));
    }
    if misses > 0 {
        metrics::counter!(zx_domain::metrics::CACHE_MISSES).increment(count(misses));
    }
}

fn now_millis() -> i64 {
    i64::try_from(Timestamp::now().as_datetime().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

impl CatalogueCache {
    pub fn new(cache: Cache, settings: CatalogueSettings) -> Self {
        Self { cache, settings }
    }

    /// The cached `GET /products/{id}` body.
    pub async fn product(&self, id: &ProductId) -> Lookup {
        let mut lookups = self.products(std::slice::from_ref(id)).await;
        lookups.pop().unwrap_or_default()
    }

    /// The cached bodies of these products, one lookup per id, in order (two round trips);
    /// hits and misses are counted.
    pub async fn products(&self, ids: &[ProductId]) -> Vec<Lookup> {
        let lookups = self.product_lookups(ids).await;
        let hits = lookups.iter().filter(|l| l.hit.is_some()).count();
        count_lookups(hits, lookups.len() - hits);
        lookups
    }

    async fn product_lookups(&self, ids: &[ProductId]) -> Vec<Lookup> {
        let none = || ids.iter().map(|_| Lookup::default()).collect();
        let generations: Vec<String> = ids.iter().map(product_generation).collect();
        let generations = match self.cache.get_many(&generations).await {
            Ok(values) => values,
            Err(error) => {
                warn("read product generations", &error);
                return none();
            }
        };
        let keys: Vec<String> = ids
            .iter()
            .zip(&generations)
            .map(|(id, g)| format!("product:{id}:g{}", generation_of(g.as_ref())))
            .collect();
        match self.cache.get_many(&keys).await {
            Ok(hits) => hits
                .into_iter()
                .zip(keys)
                .map(|(hit, key)| Lookup {
                    hit,
                    key: Some(key),
                })
                .collect(),
            Err(error) => {
                warn("read product entries", &error);
                none()
            }
        }
    }

    /// The cached page of a listing (`canonical_query` identifies it). Its key is left out,
    /// so it is not filled, while the listing index may still lag behind a recent write.
    pub async fn listing(&self, canonical_query: &str) -> (Option<CachedPage>, Lookup) {
        let lookup = self.catalogue_view(canonical_query).await;
        let page = lookup.hit.as_deref().and_then(|body| {
            serde_json::from_str::<CachedPage>(body)
                .inspect_err(|error| tracing::warn!(%error, "unreadable cached listing ignored"))
                .ok()
        });
        (page, lookup)
    }

    /// A cached view of the whole catalogue named `name` (a listing page, the categories): its
    /// key follows the catalogue generation, so every catalogue change makes it unreachable, and
    /// it is left out (not filled) while the listing index may still lag behind a recent write.
    pub async fn catalogue_view(&self, name: &str) -> Lookup {
        let lookup = self.catalogue_lookup(name).await;
        let hit = usize::from(lookup.hit.is_some());
        count_lookups(hit, 1 - hit);
        lookup
    }

    async fn catalogue_lookup(&self, name: &str) -> Lookup {
        let keys = [
            CATALOGUE_GENERATION.to_owned(),
            CATALOGUE_WRITTEN.to_owned(),
        ];
        let (generation, written) = match self.cache.get_many(&keys).await {
            Ok(values) => (
                generation_of(values.first().and_then(Option::as_ref)),
                generation_of(values.get(1).and_then(Option::as_ref)),
            ),
            Err(error) => {
                warn("read catalogue generation", &error);
                return Lookup::default();
            }
        };
        let key = format!("products:g{generation}:{name}");
        let hit = match self.cache.get(&key).await {
            Ok(hit) => hit,
            Err(error) => {
                warn("read catalogue view", &error);
                return Lookup::default();
            }
        };
        let lag_ms = i64::try_from(self.settings.index_lag.as_millis()).unwrap_or(i64::MAX);
        let settled = now_millis().saturating_sub(written) >= lag_ms;
        let key = settled.then_some(key);
        Lookup { hit, key }
    }

    /// Fills the key a lookup missed.
    pub async fn fill(&self, lookup: &Lookup, body: &str) {
        if let Some(key) = &lookup.key
            && let Err(error) = self.cache.set_ex(key, body, self.settings.ttl).await
        {
            warn("fill entry", &error);
        }
    }

    /// Fills several missed keys in one round trip.
    pub async fn fill_many(&self, entries: &[(String, String)]) {
        if let Err(error) = self.cache.set_many_ex(entries, self.settings.ttl).await {
            warn("fill entries", &error);
        }
    }

    /// Fills a listing page (when its lookup allows it).
    pub async fn fill_listing(&self, lookup: &Lookup, page: &CachedPage) {
        match serde_json::to_string(page) {
            Ok(body) => self.fill(lookup, &body).await,
            Err(error) => tracing::warn!(%error, "listing page not cached"),
        }
    }

    async fn bump(&self, counters: &[&str], listings: Listings, what: &str) {
        let now = now_millis();
        let stamps: &[(&str, i64)] = match listings {
            Listings::Changed => &[(CATALOGUE_WRITTEN, now)],
            Listings::Unchanged => &[],
        };
        if let Err(error) = self.cache.bump(counters, stamps).await {
            tracing::error!(
                %error,
                what,
                stale_for_at_most_s = self.settings.ttl.as_secs(),
                "cache invalidation failed: cached reads may be stale until their TTL"
            );
        }
    }

    /// Marks these products sold out for the sold-out TTL: orders for them are refused before
    /// they are stored. A mark that cannot be written only costs those orders a rejection by
    /// the worker.
    pub async fn mark_sold_out(&self, ids: &[ProductId]) {
        let entries: Vec<(String, String)> = ids
            .iter()
            .map(|id| (sold_out_key(id), "1".to_owned()))
            .collect();
        if let Err(error) = self
            .cache
            .set_many_ex(&entries, self.settings.sold_out_ttl)
            .await
        {
            warn("mark sold out", &error);
        }
    }

    /// Stock came back to these products: their sold-out marks go (attempted even while the
    /// breaker is open; a failure is logged at error: the mark then lasts at most its TTL).
    pub async fn clear_sold_out(&self, ids: &[ProductId]) {
        let keys: Vec<String> = ids.iter().map(sold_out_key).collect();
        if let Err(error) = self.cache.delete_many(&keys).await {
            tracing::error!(
                %error,
                false_sold_out_for_at_most_s = self.settings.sold_out_ttl.as_secs(),
                "sold-out marks not cleared"
            );
        }
    }

    /// The first of these products the cache knows to be sold out (none when the cache cannot
    /// be asked: it fails open).
    pub async fn known_sold_out(&self, ids: &[ProductId]) -> Option<ProductId> {
        let keys: Vec<String> = ids.iter().map(sold_out_key).collect();
        match self.cache.get_many(&keys).await {
            Ok(values) => ids
                .iter()
                .zip(values)
                .find(|(_, value)| value.is_some())
                .map(|(id, _)| id.clone()),
            Err(error) => {
                warn("read sold-out marks", &error);
                None
            }
        }
    }

    /// After a change of the product's stock only: its own entries become unreachable; listing
    /// pages (which hold ids, not stock) stay.
    pub async fn invalidate_product(&self, id: &ProductId) {
        self.bump(&[&product_generation(id)], Listings::Unchanged, "product")
            .await;
    }

    /// After a catalogue change of a product (or its creation): its entries and every listing
    /// page become unreachable, and listings are not cached while the index catches up.
    pub async fn invalidate_catalogue(&self, id: &ProductId) {
        self.bump(
            &[&product_generation(id), CATALOGUE_GENERATION],
            Listings::Changed,
            "catalogue",
        )
        .await;
    }
}
