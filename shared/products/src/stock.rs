//! Inventory endpoints (seed: inventory-service `/api/v1/stock/:productId`).

use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use zx_domain::{ProductReader, Stock, StockChange, StockChangeId, StockWriter};
use zx_http::{ApiError, AuthContext, json_body, json_response, query_param};

use crate::cache::CatalogueCache;
use crate::handlers::product_id;

/// The largest quantity one can ask about.
pub const MAX_QUANTITY: i64 = 1_000_000;

/// Whether a quantity of a product can be ordered now.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Availability<'a> {
    product_id: &'a str,
    available: i64,
    requested: i64,
    sufficient: bool,
}

/// The `quantity` query parameter: 1 to [`MAX_QUANTITY`], 1 when absent.
pub fn parse_quantity(text: Option<&str>) -> Result<i64, ApiError> {
    match text {
        None => Ok(1),
        Some(text) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=MAX_QUANTITY).contains(n))
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "quantity",
                    format!("must be a whole number from 1 to {MAX_QUANTITY}"),
                )
            }),
    }
}

#[utoipa::path(get, path = "/api/v1/stock/{productId}", tag = "stock",
    params(
        ("productId" = String, Path, description = "A product id.", format = "uuid"),
        ("quantity" = Option<i64>, Query, description = "Units asked about, 1–1,000,000 (default 1).", minimum = 1, maximum = 1_000_000),
    ),
    responses(
        (status = 200, description = "Available units and whether `quantity` of them can be ordered.", body = Availability),
        (status = 400, response = zx_http::openapi::BadRequest),
        (status = 404, response = zx_http::openapi::NotFound),
    ))]
/// `GET /stock/{productId}?quantity=N`: whether N units can be ordered now (N defaults to 1).
pub async fn get_stock(
    products: &dyn ProductReader,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let id = product_id(&request, "productId")?;
    let requested = parse_quantity(query_param(&request, "quantity"))?;
    let product = products
        .find_product(&id)
        .await?
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    json_response(
        200,
        &Availability {
            product_id: id.as_str(),
            available: product.stock.available,
            requested,
            sufficient: product.stock.available >= requested,
        },
    )
}

/// The body of `PUT /stock/{productId}`: exactly one of `available` (set) and `delta` (adjust).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StockChangeBody, min_properties = 1, max_properties = 1)]
pub struct PutBody {
    /// Set the available stock to this.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    available: Option<i64>,
    /// Add this (possibly negative) amount to the available stock.
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    delta: Option<i64>,
}

/// A product's stock counters.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Stock)]
pub struct StockView<'a> {
    product_id: &'a str,
    available: i64,
    reserved: i64,
}

#[utoipa::path(put, path = "/api/v1/stock/{productId}", tag = "stock",
    security(("bearer" = [])),
    params(
        ("productId" = String, Path, description = "A product id.", format = "uuid"),
        ("Idempotency-Key" = Option<String>, Header, description = "Names this change: a retry with the same key applies it once.", pattern = "^[A-Za-z0-9._:-]{1,64}$"),
    ),
    request_body = PutBody,
    responses(
        (status = 200, description = "The counters after the change.", body = StockView),
        (status = 403, response = zx_http::openapi::Forbidden),
        (status = 404, response = zx_http::openapi::NotFound),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `PUT /stock/{productId}` (admin): `{available}` sets, `{delta}` adjusts the available stock;
/// it stays within 0 and [`Stock::MAX_UNITS`] (reserved units are untouched). An
/// `Idempotency-Key` header names the change, so a client's retry applies it once (the store
/// makes retries of its own calls idempotent with a fresh id when there is no key).
pub async fn put_stock(
    stock: &dyn StockWriter,
    cache: Option<&CatalogueCache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = AuthContext::from_request(&request)?;
    if !caller.is_admin() {
        return Err(ApiError::forbidden("only an admin may change stock"));
    }
    let body: PutBody = json_body(&request)?;
    let id = product_id(&request, "productId")?;
    let change_id = match request.headers().get("idempotency-key") {
        None => StockChangeId::generate(),
        Some(value) => value
            .to_str()
            .map_err(|_| "must be visible ASCII".to_owned())
            .and_then(StockChangeId::parse)
            .map(|key| key.scoped(caller.user_id.as_str()))
            .map_err(|message| ApiError::invalid_field("Idempotency-Key", message))?,
    };
    let change = match (body.available, body.delta) {
        (Some(available), None) => StockChange::Set(
            Stock::parse_units(available)
                .map_err(|message| ApiError::invalid_field("available", message))?,
        ),
        (None, Some(delta)) if delta.unsigned_abs() > Stock::MAX_UNITS.unsigned_abs() => {
            return Err(ApiError::invalid_field(
                "delta",
                format!("must be from -{max} to {max}", max = Stock::MAX_UNITS),
            ));
        }
        (None, Some(delta)) => StockChange::Adjust(delta),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of available or delta",
            ));
        }
    };
    let counters =
        stock
            .change_stock(&id, change, &change_id)
            .await
            .map_err(|error| match error {
                zx_domain::RepositoryError::NotFound => ApiError::not_found("no such product"),
                other => other.into(),
            })?;
    if let Some(cache) = cache {
        cache.invalidate_product(&id).await;
    }
    tracing::info!(product_id = %id, actor = %caller.user_id, available = counters.available, "stock changed");
    json_response(
        200,
        &StockView {
            product_id: id.as_str(),
            available: counters.available,
            reserved: counters.reserved,
        },
    )
}
