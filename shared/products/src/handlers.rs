//! HTTP handlers of the catalogue: public reads (cached), admin writes (which invalidate).

use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use zx_cache::{ClientLimits, Decision};
use zx_domain::{
    CategoryId, Cursor, Description, ImageUrl, Page, PageLimit, Price, Product, ProductId,
    ProductName, ProductQuery, ProductReader, ProductRepository, SearchTerm, Stock, Timestamp,
    ValidationErrors,
};
use zx_http::{
    ApiError, AuthContext, client_ip, json_body, json_response, path_param, query_param,
};

use crate::cache::{CachedPage, CatalogueCache, Lookup};
use crate::views::ProductView;

/// The deepest `page` accepted (seed compatibility; cursors have no limit).
pub const MAX_PAGE: u32 = 50;

pub(crate) fn cached_json(
    status: u16,
    body: String,
    hit: bool,
) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-cache", if hit { "HIT" } else { "MISS" })
        .body(Body::Text(body))
        .map_err(ApiError::internal)
}

fn product_not_found() -> ApiError {
    ApiError::not_found("no such product")
}

/// The `{id}` of the route as a product id; a malformed id is simply not found.
pub(crate) fn product_id(request: &Request, name: &str) -> Result<ProductId, ApiError> {
    ProductId::parse(path_param(request, name)?).map_err(|_| product_not_found())
}

#[utoipa::path(get, path = "/api/v1/products/{id}", tag = "products",
    params(("id" = String, Path, description = "A product id.", format = "uuid")),
    responses(
        (status = 200, description = "The product with its current stock.", body = ProductView, headers(("x-cache" = String, description = "`HIT` when served from the cache, `MISS` when read from the store."))),
        (status = 404, response = zx_http::openapi::NotFound),
    ))]
/// `GET /products/{id}`: a live product with its current stock. Cached.
pub async fn get_product(
    products: &dyn ProductReader,
    cache: Option<&CatalogueCache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let id = product_id(&request, "id")?;
    let lookup = match cache {
        Some(cache) => cache.product(&id).await,
        None => Lookup::default(),
    };
    if let Some(body) = lookup.hit {
        return cached_json(200, body, true);
    }
    let product = products
        .find_product(&id)
        .await?
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(product_not_found)?;
    let body = serde_json::to_string(&ProductView::from(&product)).map_err(ApiError::internal)?;
    if let Some(cache) = cache {
        cache.fill(&lookup, &body).await;
    }
    cached_json(200, body, false)
}

/// A listing request, parsed from the query string.
#[derive(Debug)]
pub struct ListRequest {
    query: ProductQuery,
    page: u32,
}

impl ListRequest {
    /// Every known query parameter, validated (400 naming each invalid one).
    pub fn parse(request: &Request) -> Result<Self, ApiError> {
        let mut errors = ValidationErrors::default();
        let param = |name: &'static str| query_param(request, name);
        let price = |errors: &mut ValidationErrors, name: &'static str| {
            param(name).and_then(|v| {
                let parsed = v
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| "must be a whole number of minor units (fen)".to_owned())
                    .and_then(Price::from_minor);
                errors.check(name, parsed)
            })
        };
        let min_price = price(&mut errors, "minPrice");
        let max_price = price(&mut errors, "maxPrice");
        let category =
            param("category").and_then(|v| errors.check("category", CategoryId::parse(v)));
        let search = param("search").and_then(|v| errors.check("search", SearchTerm::parse(v)));
        let limit = match param("limit") {
            Some(v) => errors.check("limit", PageLimit::parse(v)),
            None => Some(PageLimit::DEFAULT),
        };
        let after = param("cursor").and_then(|v| errors.check("cursor", Cursor::decode(v)));
        let page = match param("page") {
            Some(v) => errors.check(
                "page",
                v.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|p| (1..=MAX_PAGE).contains(p))
                    .ok_or_else(|| format!("must be a whole number from 1 to {MAX_PAGE}")),
            ),
            None => Some(1),
        };
        if let (Some(min), Some(max)) = (min_price, max_price)
            && min > max
        {
            errors.push(zx_domain::FieldError::new(
                "minPrice",
                "must not exceed maxPrice",
            ));
        }
        if after.is_some() && page.is_some_and(|p| p > 1) {
            errors.push(zx_domain::FieldError::new(
                "page",
                "cannot be combined with cursor",
            ));
        }
        // A filtered walk may end pages early (each request examines a bounded number of
        // products): filtered listings page by cursor only.
        let filtered =
            param("search").is_some() || param("minPrice").is_some() || param("maxPrice").is_some();
        if filtered && page.is_some_and(|p| p > 1) {
            errors.push(zx_domain::FieldError::new(
                "page",
                "cannot be combined with search or a price filter: page with cursor",
            ));
        }
        errors.into_result()?;
        Ok(Self {
            query: ProductQuery {
                category,
                min_price,
                max_price,
                search,
                limit: limit.unwrap_or(PageLimit::DEFAULT),
                after,
            },
            page: page.unwrap_or(1),
        })
    }

    /// One string per distinct request: the cache key of its listing. Every field but the
    /// search term has a fixed alphabet (slug, digits, hex), and the term comes last, so two
    /// different requests never share a key.
    fn canonical(&self) -> String {
        let q = &self.query;
        format!(
            "c={}|min={}|max={}|l={}|after={}|p={}|s={}",
            q.category.as_ref().map_or("", |c| c.as_str()),
            q.min_price.map_or(String::new(), |p| p.minor().to_string()),
            q.max_price.map_or(String::new(), |p| p.minor().to_string()),
            q.limit.get(),
            q.after.as_ref().map_or(String::new(), Cursor::encode),
            self.page,
            q.search.as_ref().map_or("", |s| s.as_str()),
        )
    }
}

/// The products a listing page shows, as `GET /products/{id}` shows them, in order.
struct Shown {
    ids: Vec<ProductId>,
    bodies: Vec<String>,
    /// Whether every body was a cache hit.
    all_hit: bool,
}

/// Where [`product_bodies`] takes bodies from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bodies {
    /// The cache where it has them, else the store.
    Cached,
    /// Strongly consistent reads (which refill the cache).
    Fresh,
}

/// The bodies of these products as `GET /products/{id}` shows them, in order, leaving out
/// unknown, deleted and (with `query`) non-matching ones, taken from `from`.
async fn product_bodies(
    products: &dyn ProductReader,
    cache: Option<&CatalogueCache>,
    ids: &[ProductId],
    query: Option<&ProductQuery>,
    from: Bodies,
) -> Result<Shown, ApiError> {
    let lookups = match cache {
        Some(cache) => cache.products(ids).await,
        None => ids.iter().map(|_| Lookup::default()).collect(),
    };
    let missing: Vec<ProductId> = ids
        .iter()
        .zip(&lookups)
        .filter(|(_, lookup)| from == Bodies::Fresh || lookup.hit.is_none())
        .map(|(id, _)| id.clone())
        .collect();
    let fresh = if missing.is_empty() {
        Vec::new()
    } else {
        products.find_products(&missing).await?
    };
    let mut bodies = Vec::with_capacity(ids.len());
    let mut shown_ids = Vec::with_capacity(ids.len());
    let mut fills = Vec::new();
    for (id, lookup) in ids.iter().zip(lookups) {
        if from == Bodies::Cached
            && let Some(body) = lookup.hit
        {
            bodies.push(body);
            shown_ids.push(id.clone());
            continue;
        }
        let Some(product) = fresh.iter().find(|p| &p.id == id) else {
            continue;
        };
        let body =
            serde_json::to_string(&ProductView::from(product)).map_err(ApiError::internal)?;
        if let Some(key) = lookup.key {
            fills.push((key, body.clone()));
        }
        let shown = product.deleted_at.is_none() && query.is_none_or(|q| q.matches(product));
        if shown {
            bodies.push(body);
            shown_ids.push(id.clone());
        }
    }
    if let Some(cache) = cache {
        cache.fill_many(&fills).await;
    }
    Ok(Shown {
        ids: shown_ids,
        bodies,
        all_hit: missing.is_empty(),
    })
}

#[utoipa::path(get, path = "/api/v1/products", tag = "products",
    params(
        ("category" = Option<String>, Query, description = "A category id (slug).", pattern = "^[a-z0-9_-]{1,64}$"),
        ("minPrice" = Option<i64>, Query, description = "Lowest price, in minor units (fen), included.", minimum = 0, maximum = 1_000_000_000_000_i64),
        ("maxPrice" = Option<i64>, Query, description = "Highest price, in minor units (fen), included.", minimum = 0, maximum = 1_000_000_000_000_i64),
        ("search" = Option<String>, Query, description = "Case-insensitive substring of name or description, 2 to 100 characters or one CJK ideograph (`茶`); `%` and `_` are literal. A search (or a price filter) examines at most 500 products a request: a page may hold fewer items than `limit` and still carry a `nextCursor`. Searches have their own per-client limit (60 a minute).", min_length = 1, max_length = 100),
        ("limit" = Option<u16>, Query, description = "Page size (default 20); above 100 gives 100.", minimum = 1),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page (another value is a 400)."),
        ("page" = Option<u32>, Query, description = "1–50, for the seed's clients (not with `cursor`; above 1 not with `search` or a price filter).", minimum = 1, maximum = 50),
    ),
    responses(
        (status = 200, description = "Newest first.", body = crate::views::ProductPage, headers(("x-cache" = String, description = "`HIT` when served from the cache, `MISS` when read from the store.")), links(
            ("GetFirstProduct" = (operation_id = "get_product", parameters(("id" = "$response.body#/items/0/productId")))),
            ("OrderFirstProduct" = (operation_id = "create_order", request_body = json!({"items": [{"productId": "$response.body#/items/0/productId", "quantity": 1}]}))),
        )),
        (status = 400, response = zx_http::openapi::BadRequest),
    ))]
/// `GET /products`: newest first, filtered, one page (`cursor`, or `page` for the seed's
/// clients). Cached: the page's product ids under the catalogue's generation, each product's
/// body under its own (see [`crate::cache`]).
pub async fn list_products(
    products: &dyn ProductReader,
    cache: Option<&CatalogueCache>,
    limits: &ClientLimits,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let listing = ListRequest::parse(&request)?;
    if listing.query.search.is_some() {
        // Searches have their own, stricter per-client limit (the route's counts them too).
        let client = match request.extensions().get::<AuthContext>() {
            Some(caller) => format!("user:{}", caller.user_id),
            None => format!("ip:{}", client_ip(&request)),
        };
        let limit = limits.limits.search_per_client;
        if let Decision::Limited { retry_after } =
            limits.check(&format!("search:{client}"), limit).await
        {
            tracing::info!(limit, "search rate limited");
            metrics::counter!(zx_domain::metrics::RATE_LIMITED, "Limit" => "search").increment(1);
            return Err(ApiError::TooManyRequests { retry_after, limit });
        }
    }
    let canonical = listing.canonical();
    let (cached, lookup) = match cache {
        Some(cache) => cache.listing(&canonical).await,
        None => (None, Lookup::default()),
    };
    let (bodies, next, hit) = match cached {
        Some(page) => {
            let ids = page
                .ids
                .iter()
                .map(|id| ProductId::parse(id))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ApiError::internal)?;
            let shown = product_bodies(products, cache, &ids, None, Bodies::Cached).await?;
            (shown.bodies, page.next, shown.all_hit)
        }
        None => {
            let query = listing.query.clone();
            let page = walk(products, query, listing.page).await?;
            let ids: Vec<ProductId> = page.items.iter().map(|p| p.id.clone()).collect();
            let next = page.next.as_ref().map(Cursor::encode);
            // The index may lag: show (and filter on) the products' current state, and cache
            // only what that state shows, so a product the index still lists after it left the
            // listing is never cached as a member.
            let shown =
                product_bodies(products, cache, &ids, Some(&listing.query), Bodies::Fresh).await?;
            if let Some(cache) = cache {
                let page = CachedPage {
                    ids: shown.ids.iter().map(|id| id.as_str().to_owned()).collect(),
                    next: next.clone(),
                };
                cache.fill_listing(&lookup, &page).await;
            }
            (shown.bodies, next, false)
        }
    };
    let next = serde_json::to_string(&next).map_err(ApiError::internal)?;
    let body = format!(r#"{{"items":[{}],"nextCursor":{next}}}"#, bodies.join(","));
    cached_json(200, body, hit)
}

/// The page `page` (1-based) of a listing: walks `page - 1` pages by cursor (bounded by
/// [`MAX_PAGE`]).
async fn walk(
    products: &dyn ProductReader,
    mut query: ProductQuery,
    page_number: u32,
) -> Result<Page<Product>, ApiError> {
    let mut page = products.list_products(&query).await?;
    for _ in 1..page_number {
        let Some(next) = page.next.take() else {
            page.items.clear();
            break;
        };
        query.after = Some(next);
        page = products.list_products(&query).await?;
    }
    Ok(page)
}

/// The body of `POST /products`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = CreateProductBody)]
pub struct CreateBody {
    /// 1–200 characters (trimmed), no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    #[serde(default)]
    #[schema(max_length = 5000)]
    description: String,
    /// Minor units (fen).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    price: i64,
    /// Units available.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    stock: i64,
    /// A slug: a-z, 0-9, `-`, `_`.
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    category_id: String,
    /// At most 10.
    #[serde(default)]
    #[schema(max_items = 10, value_type = Vec<ImageUrlSchema>)]
    images: Vec<String>,
}

/// What `images` holds: an http(s) URL of at most 2048 bytes: a host name or bracketed IPv6
/// address, an optional port, then visible ASCII (non-ASCII percent-encoded). (A schema only:
/// the handler parses into `zx_domain::ImageUrl`, whose rules these are.)
#[derive(utoipa::ToSchema)]
#[schema(
    as = ImageUrl,
    pattern = r"^https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?([/?#]([!#$&-;=?-\[\]_a-z~]|%[0-9A-Fa-f]{2})*)?$",
    max_length = 2048,
    examples("https://img.zhixuan.local/phone-x.jpg")
)]
#[allow(dead_code)]
pub struct ImageUrlSchema(String);

fn parse_images(errors: &mut ValidationErrors, images: &[String]) -> Option<Vec<ImageUrl>> {
    if images.len() > ImageUrl::MAX_PER_PRODUCT {
        errors.push(zx_domain::FieldError::new(
            "images",
            format!("at most {} images", ImageUrl::MAX_PER_PRODUCT),
        ));
        return None;
    }
    let parsed: Vec<Option<ImageUrl>> = images
        .iter()
        .enumerate()
        .map(|(i, url)| errors.check(&format!("images[{i}]"), ImageUrl::parse(url)))
        .collect();
    parsed.into_iter().collect()
}

#[utoipa::path(post, path = "/api/v1/products", tag = "products",
    security(("bearer" = [])),
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created.", body = ProductView, links(
            ("GetProduct" = (operation_id = "get_product", parameters(("id" = "$response.body#/productId")))),
            ("UpdateProduct" = (operation_id = "update_product", parameters(("id" = "$response.body#/productId")))),
            ("DeleteProduct" = (operation_id = "delete_product", parameters(("id" = "$response.body#/productId")))),
            ("GetStock" = (operation_id = "get_stock", parameters(("productId" = "$response.body#/productId")))),
            ("PutStock" = (operation_id = "put_stock", parameters(("productId" = "$response.body#/productId")))),
            ("PlaceOrder" = (operation_id = "create_order", request_body = json!({"items": [{"productId": "$response.body#/productId", "quantity": 1}]}))),
        )),
        (status = 403, response = zx_http::openapi::Forbidden),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `POST /products` (admin): a new product → 201.
pub async fn create_product(
    products: &dyn ProductRepository,
    cache: Option<&CatalogueCache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = json_body(&request)?;
    let mut errors = ValidationErrors::default();
    let name = errors.check("name", ProductName::parse(&body.name));
    let description = errors.check("description", Description::parse(&body.description));
    let price = errors.check("price", Price::from_minor(body.price));
    let category = errors.check("categoryId", CategoryId::parse(&body.category_id));
    let images = parse_images(&mut errors, &body.images);
    let stock = errors.check("stock", Stock::parse_units(body.stock));
    let (Some(name), Some(description), Some(price), Some(category), Some(images), Some(stock)) =
        (name, description, price, category, images, stock)
    else {
        return Err(errors.into());
    };
    errors.into_result()?;
    let now = Timestamp::now();
    let product = Product {
        id: ProductId::generate(),
        name,
        description,
        price,
        category,
        images,
        stock: Stock {
            available: stock,
            reserved: 0,
        },
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    };
    products.create_product(&product).await?;
    if let Some(cache) = cache {
        cache.invalidate_catalogue(&product.id).await;
    }
    tracing::info!(product_id = %product.id, "product created");
    json_response(201, &ProductView::from(&product))
}

/// The body of `PUT /products/{id}`: at least one field.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = UpdateProductBody, min_properties = 1)]
pub struct UpdateBody {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: Option<String>,
    #[schema(max_length = 5000)]
    description: Option<String>,
    /// Minor units (fen).
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    price: Option<i64>,
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    category_id: Option<String>,
    #[schema(max_items = 10, value_type = Option<Vec<ImageUrlSchema>>)]
    images: Option<Vec<String>>,
}

async fn live_product(products: &dyn ProductReader, id: &ProductId) -> Result<Product, ApiError> {
    products
        .find_product(id)
        .await?
        .filter(|p| p.deleted_at.is_none())
        .ok_or_else(product_not_found)
}

fn next_version(product: &Product) -> Product {
    Product {
        updated_at: Timestamp::now().max(product.updated_at),
        version: product.version + 1,
        ..product.clone()
    }
}

#[utoipa::path(put, path = "/api/v1/products/{id}", tag = "products",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A product id.", format = "uuid")),
    request_body = UpdateBody,
    responses(
        (status = 200, description = "Updated.", body = ProductView),
        (status = 403, response = zx_http::openapi::Forbidden),
        (status = 404, response = zx_http::openapi::NotFound),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `PUT /products/{id}` (admin): changes catalogue fields (stock changes go through `/stock`).
pub async fn update_product(
    products: &dyn ProductRepository,
    cache: Option<&CatalogueCache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let body: UpdateBody = json_body(&request)?;
    let id = product_id(&request, "id")?;
    let mut errors = ValidationErrors::default();
    let name = body
        .name
        .as_deref()
        .map(|v| errors.check("name", ProductName::parse(v)));
    let description = body
        .description
        .as_deref()
        .map(|v| errors.check("description", Description::parse(v)));
    let price = body
        .price
        .map(|v| errors.check("price", Price::from_minor(v)));
    let category = body
        .category_id
        .as_deref()
        .map(|v| errors.check("categoryId", CategoryId::parse(v)));
    let images = body.images.as_deref().map(|v| parse_images(&mut errors, v));
    errors.into_result()?;
    if name.is_none()
        && description.is_none()
        && price.is_none()
        && category.is_none()
        && images.is_none()
    {
        return Err(ApiError::bad_request(
            "nothing to update: give at least one of name, description, price, categoryId, images",
        ));
    }
    let current = live_product(products, &id).await?;
    let mut next = next_version(&current);
    if let Some(Some(name)) = name {
        next.name = name;
    }
    if let Some(Some(description)) = description {
        next.description = description;
    }
    if let Some(Some(price)) = price {
        next.price = price;
    }
    if let Some(Some(category)) = category {
        next.category = category;
    }
    if let Some(Some(images)) = images {
        next.images = images;
    }
    products.update_product(&current, &next).await?;
    if let Some(cache) = cache {
        cache.invalidate_catalogue(&id).await;
    }
    json_response(200, &ProductView::from(&next))
}

#[utoipa::path(delete, path = "/api/v1/products/{id}", tag = "products",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "A product id.", format = "uuid")),
    responses(
        (status = 204, description = "Deleted (soft: orders keep referring to it)."),
        (status = 403, response = zx_http::openapi::Forbidden),
        (status = 404, response = zx_http::openapi::NotFound),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `DELETE /products/{id}` (admin): a soft delete → 204. Orders keep referring to it.
pub async fn delete_product(
    products: &dyn ProductRepository,
    cache: Option<&CatalogueCache>,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let id = product_id(&request, "id")?;
    let current = live_product(products, &id).await?;
    let mut next = next_version(&current);
    next.deleted_at = Some(next.updated_at);
    products.update_product(&current, &next).await?;
    if let Some(cache) = cache {
        cache.invalidate_catalogue(&id).await;
    }
    tracing::info!(product_id = %id, "product deleted");
    Response::builder()
        .status(204)
        .body(Body::Empty)
        .map_err(ApiError::internal)
}
