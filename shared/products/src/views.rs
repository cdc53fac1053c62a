//! What the API returns about products.

use serde::Serialize;
use zx_domain::{Product, Timestamp};

/// A product as the catalogue shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Product)]
pub struct ProductView<'a> {
    pub product_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    /// Minor units (fen).
    pub price: i64,
    pub category_id: &'a str,
    pub images: Vec<&'a str>,
    /// Units that can be ordered now.
    pub stock: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl<'a> From<&'a Product> for ProductView<'a> {
    fn from(p: &'a Product) -> Self {
        Self {
            product_id: p.id.as_str(),
            name: p.name.as_str(),
            description: p.description.as_str(),
            price: p.price.minor(),
            category_id: p.category.as_str(),
            images: p.images.iter().map(|i| i.as_str()).collect(),
            stock: p.stock.available,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A page of the catalogue (`GET /products`). The handler writes it from cached product
/// bodies (`{"items":[...],"nextCursor":...}`) rather than through this type; the end-to-end
/// tests and the schema fuzzer check the two agree.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductPage<'a> {
    pub items: Vec<ProductView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}
