//! Inventory endpoints (seed: inventory-service `/api/v1/stock/:productId`).

use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use zx_domain::stock::{MAX_SHARDS, StockRecords};
use zx_domain::{ProductReader, ProductRepository, Stock, StockChange, StockChangeId};
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
        (status = 200, description = "Available units and whether `quantity` of them can be ordered. The `ETag` names this state of the stock: an admin sends it back as `If-Match` to set the stock.", body = Availability,
            headers(("etag" = String, description = "The stock's current state; changes with every reservation, release and change."))),
        (status = 400, response = zx_http::openapi::BadRequest),
        (status = 404, response = zx_http::openapi::NotFound),
    ))]
/// `GET /stock/{productId}?quantity=N`: whether N units can be ordered now (N defaults to 1),
/// with the stock's `ETag`.
pub async fn get_stock(
    products: &dyn ProductReader,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let id = product_id(&request, "productId")?;
    let requested = parse_quantity(query_param(&request, "quantity"))?;
    let records = products
        .stock_records(&id)
        .await?
        .filter(|r| r.live)
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    let available = records.totals().available;
    let mut response = json_response(
        200,
        &Availability {
            product_id: id.as_str(),
            available,
            requested,
            sufficient: available >= requested,
        },
    )?;
    with_etag(&mut response, &records);
    Ok(response)
}

fn with_etag(response: &mut Response<Body>, records: &StockRecords) {
    if let Ok(tag) = http::HeaderValue::from_str(&records.tag()) {
        response.headers_mut().insert(http::header::ETAG, tag);
    }
}

/// The body of `PUT /stock/{productId}`: exactly one of `available` (set, with `If-Match`),
/// `delta` (adjust) and `shards` (split the stock).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StockChangeBody, min_properties = 1, max_properties = 1)]
pub struct PutBody {
    /// Set the available stock to this; needs `If-Match` with the `ETag` of `GET /stock`, so
    /// units reserved since that read are never forgotten.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    available: Option<i64>,
    /// Add this (possibly negative) amount to the available stock.
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    delta: Option<i64>,
    /// Split the product's stock into this many shards (1–32), so a hot product's reservations
    /// spread over that many records; no unit is lost while orders flow.
    #[schema(minimum = 1, maximum = 32)]
    shards: Option<i64>,
}

/// A product's stock counters.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Stock)]
pub struct StockView<'a> {
    product_id: &'a str,
    available: i64,
    reserved: i64,
    /// How many shards the stock is split into.
    shards: u16,
}

#[utoipa::path(put, path = "/api/v1/stock/{productId}", tag = "stock",
    security(("bearer" = [])),
    params(
        ("productId" = String, Path, description = "A product id.", format = "uuid"),
        ("Idempotency-Key" = Option<String>, Header, description = "Names this change: a retry with the same key applies it once.", pattern = "^[A-Za-z0-9._:-]{1,64}$"),
        ("If-Match" = Option<String>, Header, description = "With `available`: the `ETag` of `GET /stock/{productId}` (required: 428 without it, 412 when the stock changed since)."),
    ),
    request_body = PutBody,
    responses(
        (status = 200, description = "The counters after the change, with the stock's new `ETag`.", body = StockView,
            headers(("etag" = String, description = "The stock's state after the change."))),
        (status = 403, response = zx_http::openapi::Forbidden),
        (status = 404, response = zx_http::openapi::NotFound),
        (status = 409, response = zx_http::openapi::Conflict),
        (status = 412, response = zx_http::openapi::PreconditionFailed),
        (status = 428, response = zx_http::openapi::PreconditionRequired),
    ))]
/// `PUT /stock/{productId}` (admin): `{available}` sets the available stock (only with
/// `If-Match` naming its current state: 428 without, 412 when stale), `{delta}` adjusts it,
/// `{shards}` splits it; it stays within 0 and [`Stock::MAX_UNITS`] (reserved units are
/// untouched). An `Idempotency-Key` header names a change, so a client's retry applies it once
/// (the store makes retries of its own calls idempotent with a fresh id when there is no key).
pub async fn put_stock(
    stock: &dyn ProductRepository,
    cache: Option<&CatalogueCache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    // The edge let only admins in (`Access::Admin`).
    let caller = AuthContext::from_request(&request)?;
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
    let not_found = |error| match error {
        zx_domain::RepositoryError::NotFound => ApiError::not_found("no such product"),
        other => other.into(),
    };
    let change = match (body.available, body.delta, body.shards) {
        (Some(available), None, None) => StockChange::Set {
            available: Stock::parse_units(available)
                .map_err(|message| ApiError::invalid_field("available", message))?,
            tag: if_match(&request)?,
        },
        (None, Some(delta), None) if delta.unsigned_abs() > Stock::MAX_UNITS.unsigned_abs() => {
            return Err(ApiError::invalid_field(
                "delta",
                format!("must be from -{max} to {max}", max = Stock::MAX_UNITS),
            ));
        }
        (None, Some(delta), None) => StockChange::Adjust(delta),
        (None, None, Some(shards)) => {
            let shards = u16::try_from(shards)
                .ok()
                .filter(|n| (1..=MAX_SHARDS).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_field("shards", format!("must be 1 to {MAX_SHARDS}"))
                })?;
            let records = stock
                .set_stock_shards(&id, shards)
                .await
                .map_err(not_found)?;
            tracing::info!(product_id = %id, actor = %caller.user_id, shards, "stock shards set");
            return stock_response(&id, &records);
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of available, delta or shards",
            ));
        }
    };
    let counters = stock
        .change_stock(&id, change, &change_id)
        .await
        .map_err(not_found)?;
    if let Some(cache) = cache {
        // Stock may have come back: a sold-out mark goes with the stale views.
        cache.clear_sold_out(std::slice::from_ref(&id)).await;
        cache.invalidate_product(&id).await;
    }
    tracing::info!(product_id = %id, actor = %caller.user_id, available = counters.available, "stock changed");
    let records = stock
        .stock_records(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such product"))?;
    stock_response(&id, &records)
}

/// The `If-Match` of a set: required (428), one entity tag (not `*`, which would set the stock
/// whatever was reserved meanwhile).
fn if_match(request: &Request) -> Result<String, ApiError> {
    let required = || {
        ApiError::PreconditionRequired {
        detail: "setting the available stock needs If-Match with the ETag of GET /stock/{productId}, so units reserved since then are not forgotten (or use delta)".into(),
    }
    };
    let value = request
        .headers()
        .get(http::header::IF_MATCH)
        .ok_or_else(required)?
        .to_str()
        .map_err(|_| ApiError::invalid_field("If-Match", "must be an entity tag"))?
        .trim();
    if value == "*" || value.is_empty() {
        return Err(required());
    }
    Ok(value.to_owned())
}

fn stock_response(
    id: &zx_domain::ProductId,
    records: &StockRecords,
) -> Result<Response<Body>, ApiError> {
    let totals = records.totals();
    let mut response = json_response(
        200,
        &StockView {
            product_id: id.as_str(),
            available: totals.available,
            reserved: totals.reserved,
            shards: records.active,
        },
    )?;
    with_etag(&mut response, records);
    Ok(response)
}
