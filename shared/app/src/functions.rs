//! One builder per HTTP function: the only place a function's handler is put together (its
//! edge: authentication and rate-limit group; its handler; the services it uses). Each
//! function's `main.rs` calls its builder through [`crate::run_http`], and the local gateway
//! calls the same builders through [`HTTP_FUNCTIONS`], so the gateway runs the deployed code.

use std::future::Future;
use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use zx_domain::{ProductRepository, UserRepository};
use zx_http::{Access, ApiError, Edge, HttpHandler, RouteLimit};
use zx_products::CatalogueCache;

use crate::{ConfigError, Services};

/// Builds a function's handler from the services of its cold start.
pub type Builder = fn(&Services) -> Result<HttpHandler, ConfigError>;

/// Every HTTP function by binary name (the crate under `functions/`, `BuildProperties.Binary`
/// in `template.yaml`).
pub const HTTP_FUNCTIONS: &[(&str, Builder)] = &[
    ("health", health),
    ("users-register", users_register),
    ("users-login", users_login),
    ("users-validate", users_validate),
    ("users-me", users_me),
    ("users-get", users_get),
    ("users-update", users_update),
    ("products-list", products_list),
    ("products-get", products_get),
    ("products-create", products_create),
    ("products-update", products_update),
    ("products-delete", products_delete),
    ("stock-get", stock_get),
    ("stock-put", stock_put),
    ("orders-create", orders_create),
    ("orders-get", orders_get),
    ("orders-list", orders_list),
    ("orders-cancel", orders_cancel),
    ("orders-update-status", orders_update_status),
];

/// The builder of the function named `binary`.
pub fn builder(binary: &str) -> Option<Builder> {
    HTTP_FUNCTIONS
        .iter()
        .find(|(name, _)| *name == binary)
        .map(|(_, build)| *build)
}

/// The seed's Kong services: which per-client limit a route counts against.
#[derive(Debug, Clone, Copy)]
enum Group {
    Users,
    Products,
    Orders,
}

/// The edge of a function: it verifies bearer tokens (required for `access: Authenticated`,
/// and used to tell clients apart everywhere) and counts requests per client for `group`.
fn edge(services: &Services, access: Access, group: Group) -> Result<Edge, ConfigError> {
    let verifier = services.verifier()?;
    let limits = services.limits.limits;
    let limit = match group {
        Group::Users => RouteLimit {
            group: "users",
            per_minute: limits.users_per_client,
        },
        Group::Products => RouteLimit {
            group: "products",
            per_minute: limits.products_per_client,
        },
        Group::Orders => RouteLimit {
            group: "orders",
            per_minute: limits.orders_per_client,
        },
    };
    let limiter = services.limits.limiter.clone().map(|l| (l, limit));
    Ok(Edge::new(access, Some(verifier), limiter))
}

/// `GET /health` (and `/api/v1/<service>/health`): no token, no limit.
pub fn health(services: &Services) -> Result<HttpHandler, ConfigError> {
    let checks = Arc::new(services.health_checks());
    let timeout = services.health_timeout;
    Ok(Edge::new(Access::Public, None, None).wrap(move |request| {
        let checks = checks.clone();
        async move { crate::health_handler(&checks, timeout, request).await }
    }))
}

pub fn users_register(services: &Services) -> Result<HttpHandler, ConfigError> {
    let (users, hasher, limits) = (
        services.stores.users.clone(),
        services.hasher.clone(),
        services.limits.clone(),
    );
    Ok(
        edge(services, Access::Public, Group::Users)?.wrap(move |request| {
            let (users, hasher, limits) = (users.clone(), hasher.clone(), limits.clone());
            async move { zx_users::register(&*users, &hasher, &limits, request).await }
        }),
    )
}

/// The only function that holds the private key.
pub fn users_login(services: &Services) -> Result<HttpHandler, ConfigError> {
    let issuer = services.issuer()?;
    let (users, hasher, limits) = (
        services.stores.users.clone(),
        services.hasher.clone(),
        services.limits.clone(),
    );
    Ok(
        edge(services, Access::Public, Group::Users)?.wrap(move |request| {
            let (users, hasher, limits, issuer) = (
                users.clone(),
                hasher.clone(),
                limits.clone(),
                issuer.clone(),
            );
            async move { zx_users::login(&*users, &hasher, &issuer, &limits, request).await }
        }),
    )
}

pub fn users_validate(services: &Services) -> Result<HttpHandler, ConfigError> {
    Ok(edge(services, Access::Authenticated, Group::Users)?.wrap(zx_users::validate))
}

/// A profile read for the authenticated caller: `handler` gets the users and the request.
fn profile_read<F, Fut>(services: &Services, handler: F) -> Result<HttpHandler, ConfigError>
where
    F: Fn(Arc<dyn UserRepository>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    let users = services.stores.users.clone();
    Ok(edge(services, Access::Authenticated, Group::Users)?
        .wrap(move |request| handler(users.clone(), request)))
}

pub fn users_me(services: &Services) -> Result<HttpHandler, ConfigError> {
    profile_read(services, |users, request| async move {
        zx_users::me(&*users, request).await
    })
}

pub fn users_get(services: &Services) -> Result<HttpHandler, ConfigError> {
    profile_read(services, |users, request| async move {
        zx_users::get_user(&*users, request).await
    })
}

pub fn users_update(services: &Services) -> Result<HttpHandler, ConfigError> {
    let (users, hasher) = (services.stores.users.clone(), services.hasher.clone());
    Ok(
        edge(services, Access::Authenticated, Group::Users)?.wrap(move |request| {
            let (users, hasher) = (users.clone(), hasher.clone());
            async move { zx_users::update_user(&*users, &hasher, request).await }
        }),
    )
}

/// A catalogue function: `handler` gets the product repository and the catalogue cache.
fn catalogue<F, Fut>(
    services: &Services,
    access: Access,
    handler: F,
) -> Result<HttpHandler, ConfigError>
where
    F: Fn(Arc<dyn ProductRepository>, Option<CatalogueCache>, Request) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    let (products, cache) = (services.stores.products.clone(), services.catalogue_cache());
    Ok(edge(services, access, Group::Products)?
        .wrap(move |request| handler(products.clone(), cache.clone(), request)))
}

/// A catalogue function whose handler takes (products, cache, request).
macro_rules! catalogue_function {
    ($(#[$doc:meta])* $name:ident, $access:expr, $handler:path) => {
        $(#[$doc])*
        pub fn $name(services: &Services) -> Result<HttpHandler, ConfigError> {
            catalogue(services, $access, |products, cache, request| async move {
                $handler(&*products, cache.as_ref(), request).await
            })
        }
    };
}

catalogue_function!(
    /// `GET /products`
    products_list, Access::Public, zx_products::list_products
);
catalogue_function!(
    /// `GET /products/{id}`
    products_get, Access::Public, zx_products::get_product
);
catalogue_function!(
    /// `POST /products` (admin)
    products_create, Access::Authenticated, zx_products::create_product
);
catalogue_function!(
    /// `PUT /products/{id}` (admin)
    products_update, Access::Authenticated, zx_products::update_product
);
catalogue_function!(
    /// `DELETE /products/{id}` (admin)
    products_delete, Access::Authenticated, zx_products::delete_product
);
catalogue_function!(
    /// `PUT /stock/{productId}` (admin)
    stock_put, Access::Authenticated, zx_products::put_stock
);

pub fn stock_get(services: &Services) -> Result<HttpHandler, ConfigError> {
    catalogue(
        services,
        Access::Public,
        |products, _, request| async move { zx_products::get_stock(&*products, request).await },
    )
}

/// An orders function: authenticated, counted against the orders limit; `handler` gets the
/// saga's dependencies and the request.
fn orders<F, Fut>(services: &Services, handler: F) -> Result<HttpHandler, ConfigError>
where
    F: Fn(Arc<zx_orders::Saga>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    let saga = Arc::new(services.saga()?);
    Ok(edge(services, Access::Authenticated, Group::Orders)?
        .wrap(move |request| handler(saga.clone(), request)))
}

/// An orders function whose handler takes (saga, request).
macro_rules! orders_function {
    ($(#[$doc:meta])* $name:ident, $handler:path) => {
        $(#[$doc])*
        pub fn $name(services: &Services) -> Result<HttpHandler, ConfigError> {
            orders(services, |saga, request| async move { $handler(&saga, request).await })
        }
    };
}

orders_function!(
    /// `POST /orders`
    orders_create, zx_orders::http::create_order
);
orders_function!(
    /// `GET /orders/{id}`
    orders_get, zx_orders::http::get_order
);
orders_function!(
    /// `GET /orders`
    orders_list, zx_orders::http::list_orders
);
orders_function!(
    /// `POST /orders/{id}/cancel`
    orders_cancel, zx_orders::http::cancel_order
);
orders_function!(
    /// `PATCH /orders/{id}/status` (admin)
    orders_update_status, zx_orders::http::update_status
);
