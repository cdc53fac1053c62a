//! `GET /categories`: the catalogue's categories and how many live products each holds, for a
//! shop's navigation. Cached until the catalogue changes.

use lambda_http::{Body, Request, Response};
use serde::Serialize;
use zx_domain::{CategoryCount, CategoryReader};
use zx_http::ApiError;

use crate::cache::{CatalogueCache, Lookup};
use crate::handlers::cached_json;

/// A category and its live products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryView {
    /// The category id, as products carry it (`categoryId`).
    #[schema(example = "phones")]
    pub id: String,
    /// How many live (not deleted) products it holds: at least 1.
    #[schema(minimum = 1)]
    pub products: u64,
}

/// Every category with products, by id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryList {
    pub items: Vec<CategoryView>,
}

impl From<Vec<CategoryCount>> for CategoryList {
    fn from(counts: Vec<CategoryCount>) -> Self {
        Self {
            items: counts
                .into_iter()
                .map(|c| CategoryView {
                    id: c.id.as_str().to_owned(),
                    products: c.products,
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/api/v1/categories", tag = "products",
    responses(
        (status = 200, description = "Every category with live products, by id, and how many each holds.", body = CategoryList, headers(("x-cache" = String, description = "`HIT` when served from the cache, `MISS` when read from the store."))),
    ))]
/// `GET /categories`: every category with live products and their counts. Cached until the
/// catalogue changes; one store read whatever the catalogue's size on DynamoDB.
pub async fn list_categories(
    categories: &dyn CategoryReader,
    cache: Option<&CatalogueCache>,
    _request: Request,
) -> Result<Response<Body>, ApiError> {
    let lookup = match cache {
        Some(cache) => cache.catalogue_view("categories").await,
        None => Lookup::default(),
    };
    if let Some(body) = lookup.hit {
        return cached_json(200, body, true);
    }
    let list = CategoryList::from(categories.categories().await?);
    let body = serde_json::to_string(&list).map_err(ApiError::internal)?;
    if let Some(cache) = cache {
        cache.fill(&lookup, &body).await;
    }
    cached_json(200, body, false)
}
