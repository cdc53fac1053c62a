//! The orders HTTP handlers: parse and validate, check the caller, call a use case, render.

use lambda_http::{Body, Request, Response};
use serde::{Deserialize, Serialize};
use zx_domain::{
    FieldError, IdempotencyKey, OrderCursor, OrderId, OrderQuery, OrderReader, OrderStatus,
    PageLimit, ProductId, ShippingAddress, UserId, ValidationErrors,
};
use zx_http::{ApiError, AuthContext, json_body, json_response, path_param, query_param};

use crate::usecases::{
    self, Actor, MAX_LINES, MAX_QUANTITY, OrderError, OrderRequest, Placement, Transitions,
};
use crate::views::OrderView;

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        match error {
            OrderError::UnknownProducts(ids) => {
                let errors: Vec<FieldError> = ids
                    .iter()
                    .map(|id| FieldError::new("items", format!("unknown product {id}")))
                    .collect();
                ApiError::BadRequest {
                    detail: format!(
                        "unknown or deleted products: {}",
                        ids.iter()
                            .map(ProductId::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    errors,
                }
            }
            OrderError::KeyReused => zx_domain::RepositoryError::IdempotencyKeyReused.into(),
            OrderError::NotFound => ApiError::not_found("no such order"),
            OrderError::InvalidTransition { from, to } => ApiError::Conflict {
                detail: format!("an order that is {from} cannot become {to}"),
                errors: vec![FieldError::new(
                    "status",
                    format!("{to} is not reachable from {from}"),
                )],
            },
            OrderError::Conflict => ApiError::Conflict {
                detail: "the order was changed by another request; read it again".into(),
                errors: Vec::new(),
            },
            OrderError::TotalTooLarge => ApiError::bad_request("the order total is too large"),
            OrderError::SoldOut(product) => ApiError::OutOfStock {
                product_id: product.as_str().to_owned(),
            },
            OrderError::TooManyOpen(max) => ApiError::Conflict {
                detail: format!(
                    "you already have {max} open orders (pending or confirmed): pay for or cancel one first"
                ),
                errors: Vec::new(),
            },
            OrderError::Repository(error) => error.into(),
        }
    }
}

/// The order as `actor` may see it (customers do not see admins' ids).
fn view<'a>(actor: &Actor, order: &'a zx_domain::Order) -> OrderView<'a> {
    match (&actor.driver, &actor.user_id) {
        (zx_domain::Driver::Customer, Some(viewer)) => OrderView::for_customer(order, viewer),
        _ => OrderView::current(order),
    }
}

fn actor(request: &Request) -> Result<Actor, ApiError> {
    let caller = AuthContext::from_request(request)?;
    Ok(if caller.is_admin() {
        Actor::admin(caller.user_id)
    } else {
        Actor::customer(caller.user_id)
    })
}

/// The `{id}` of the route; a malformed id is simply not found.
fn order_id(request: &Request) -> Result<OrderId, ApiError> {
    OrderId::parse(path_param(request, "id")?).map_err(|_| ApiError::not_found("no such order"))
}

/// The body of `POST /orders`: what to buy (prices come from the catalogue).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = CreateOrderBody)]
pub struct CreateBody {
    #[schema(min_items = 1, max_items = 50)]
    items: Vec<ItemBody>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 500)]
    shipping_address: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = OrderItemBody)]
pub struct ItemBody {
    #[schema(format = "uuid")]
    product_id: String,
    #[schema(minimum = 1, maximum = 100)]
    quantity: i64,
}

/// Validates a create body: 1 to [`MAX_LINES`] lines, product ids, quantities 1 to
/// [`MAX_QUANTITY`], an optional address.
pub fn parse_order_request(body: CreateBody) -> Result<OrderRequest, ApiError> {
    let mut errors = ValidationErrors::default();
    if body.items.is_empty() || body.items.len() > MAX_LINES {
        errors.push(FieldError::new(
            "items",
            format!("must have 1 to {MAX_LINES} lines"),
        ));
    }
    let mut lines = Vec::with_capacity(body.items.len());
    for (i, item) in body.items.iter().take(MAX_LINES).enumerate() {
        let id = errors.check(
            &format!("items[{i}].productId"),
            ProductId::parse(&item.product_id),
        );
        let quantity = errors.check(
            &format!("items[{i}].quantity"),
            u32::try_from(item.quantity)
                .ok()
                .filter(|q| (1..=MAX_QUANTITY).contains(q))
                .ok_or_else(|| format!("must be a whole number from 1 to {MAX_QUANTITY}")),
        );
        if let (Some(id), Some(quantity)) = (id, quantity) {
            lines.push((id, quantity));
        }
    }
    let shipping_address = body
        .shipping_address
        .as_deref()
        .and_then(|a| errors.check("shippingAddress", ShippingAddress::parse(a)));
    if !errors.is_empty() {
        return Err(errors.into());
    }
    Ok(OrderRequest {
        lines,
        shipping_address,
    })
}

fn idempotency_key(request: &Request) -> Result<IdempotencyKey, ApiError> {
    let value = request.headers().get("idempotency-key").ok_or_else(|| {
        ApiError::invalid_field(
            "Idempotency-Key",
            "this header is required: a unique key per order, reused only to retry it",
        )
    })?;
    value
        .to_str()
        .map_err(|_| "must be 1 to 255 visible ASCII characters".to_owned())
        .and_then(IdempotencyKey::parse)
        .map_err(|message| ApiError::invalid_field("Idempotency-Key", message))
}

fn order_response(
    status: u16,
    view: &OrderView<'_>,
    replayed: bool,
) -> Result<Response<Body>, ApiError> {
    let mut response = json_response(status, view)?;
    let headers = response.headers_mut();
    if let Ok(location) = http::HeaderValue::from_str(&format!("/api/v1/orders/{}", view.order_id))
    {
        headers.insert(http::header::LOCATION, location);
    }
    if replayed {
        headers.insert(
            "idempotent-replayed",
            http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

#[utoipa::path(post, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "Unique per order (1–255 visible ASCII characters); reused only to retry it.", pattern = "^[!-~]{1,255}$")),
    request_body = CreateBody,
    responses(
        (status = 202, description = "Accepted: the order is pending until its stock is reserved. A retry with the same key and body answers the same order again (`Idempotent-Replayed: true`).", body = OrderView,
            headers(
                ("location" = String, description = "The order's URL."),
                ("idempotent-replayed" = String, description = "`true` when this answers an earlier request with the same key."),
            ),
            links(
                ("GetOrder" = (operation_id = "get_order", parameters(("id" = "$response.body#/orderId")))),
                ("CancelOrder" = (operation_id = "cancel_order", parameters(("id" = "$response.body#/orderId")))),
                ("UpdateStatus" = (operation_id = "update_status", parameters(("id" = "$response.body#/orderId")))),
            )),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `POST /orders`: 202 with the pending order (server prices). Same key and request → the
/// same answer; same key, other request → 409; the customer holds `ORDER_MAX_OPEN` open orders
/// → 409; a product the cache knows is sold out → 409 `out-of-stock` naming it. A 409 stores
/// nothing.
pub async fn create_order(
    placement: &Placement,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let caller = AuthContext::from_request(&request)?;
    let key = idempotency_key(&request)?;
    let order_request = parse_order_request(json_body(&request)?)?;
    let placed = usecases::place_order(placement, &caller.user_id, key, &order_request).await?;
    order_response(202, &OrderView::as_created(&placed.order), placed.replayed)
}

#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "An order id.", format = "uuid")),
    responses(
        (status = 200, description = "The order with its status history.", body = OrderView),
        (status = 404, response = zx_http::openapi::NotFound),
    ))]
/// `GET /orders/{id}`: the owner's or, for an admin, any order; others → 404.
pub async fn get_order(
    orders: &dyn OrderReader,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let actor = actor(&request)?;
    let id = order_id(&request)?;
    let order = usecases::get_order(orders, &actor, &id).await?;
    json_response(200, &view(&actor, &order))
}

/// A page of orders, newest first.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderPage)]
pub struct ListView<'a> {
    items: Vec<OrderView<'a>>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orders", tag = "orders",
    security(("bearer" = [])),
    params(
        ("limit" = Option<u16>, Query, description = "Page size (default 20); above 100 gives 100.", minimum = 1),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page (another value is a 400)."),
        ("status" = Option<OrderStatus>, Query, description = "Only orders in this status."),
        ("userId" = Option<String>, Query, description = "Admins: only this customer's orders (customers always see only their own).", format = "uuid"),
    ),
    responses(
        (status = 200, description = "Customers: their own orders; admins: everyone's.", body = ListView),
        (status = 400, response = zx_http::openapi::BadRequest),
    ))]
/// `GET /orders`: customers their own, admins all (`?userId=`, `?status=`), newest first.
pub async fn list_orders(
    orders: &dyn OrderReader,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let actor = actor(&request)?;
    let mut errors = ValidationErrors::default();
    let limit = query_param(&request, "limit")
        .map(|v| errors.check("limit", PageLimit::parse(v)))
        .unwrap_or(Some(PageLimit::DEFAULT));
    let after = query_param(&request, "cursor")
        .map(|v| errors.check("cursor", OrderCursor::decode(v)).map(Some))
        .unwrap_or(Some(None));
    let status = query_param(&request, "status")
        .map(|v| errors.check("status", OrderStatus::parse(v)).map(Some))
        .unwrap_or(Some(None));
    let user_id = query_param(&request, "userId")
        .map(|v| errors.check("userId", UserId::parse(v)).map(Some))
        .unwrap_or(Some(None));
    let (Some(limit), Some(after), Some(status), Some(user_id)) = (limit, after, status, user_id)
    else {
        return Err(errors.into());
    };
    let page = usecases::list_orders(
        orders,
        &actor,
        OrderQuery {
            user_id,
            status,
            limit,
            after,
        },
    )
    .await?;
    json_response(
        200,
        &ListView {
            items: page.items.iter().map(|order| view(&actor, order)).collect(),
            next_cursor: page.next.as_ref().map(OrderCursor::encode),
        },
    )
}

#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "An order id.", format = "uuid")),
    responses(
        (status = 200, description = "Cancelled; reserved stock is released.", body = OrderView),
        (status = 404, response = zx_http::openapi::NotFound),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `POST /orders/{id}/cancel`: the owner (pending or confirmed) or an admin.
pub async fn cancel_order(
    transitions: &Transitions,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    let actor = actor(&request)?;
    let id = order_id(&request)?;
    let reason = if actor.driver == zx_domain::Driver::Admin {
        "cancelled_by_admin"
    } else {
        "cancelled_by_customer"
    };
    let order = usecases::change_status(
        transitions,
        &actor,
        &id,
        OrderStatus::Cancelled,
        Some(reason),
    )
    .await?;
    json_response(200, &view(&actor, &order))
}

/// The body of `PATCH /orders/{id}/status`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OrderStatusBody)]
pub struct StatusBody {
    /// The next status along the state machine.
    #[schema(value_type = OrderStatus)]
    status: String,
    /// 1–200 characters without control characters, recorded in the history.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$"
    )]
    #[serde(default)]
    reason: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/orders/{id}/status", tag = "orders",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "An order id.", format = "uuid")),
    request_body = StatusBody,
    responses(
        (status = 200, description = "Moved; the change is in the history.", body = OrderView),
        (status = 403, response = zx_http::openapi::Forbidden),
        (status = 404, response = zx_http::openapi::NotFound),
        (status = 409, response = zx_http::openapi::Conflict),
    ))]
/// `PATCH /orders/{id}/status` (admin): `{status, reason?}` along the state machine.
pub async fn update_status(
    transitions: &Transitions,
    request: Request,
) -> Result<Response<Body>, ApiError> {
    // The edge let only admins in (`Access::Admin`).
    let actor = actor(&request)?;
    let body: StatusBody = json_body(&request)?;
    let to = OrderStatus::parse(&body.status)
        .map_err(|message| ApiError::invalid_field("status", message))?;
    if let Some(reason) = &body.reason
        && (reason.is_empty()
            || reason.chars().count() > 200
            || reason.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_field(
            "reason",
            "must be 1 to 200 characters without control characters",
        ));
    }
    let id = order_id(&request)?;
    let order =
        usecases::change_status(transitions, &actor, &id, to, body.reason.as_deref()).await?;
    json_response(200, &OrderView::current(&order))
}
