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

use crate::wiring::{Needs, Sends, SessionUse, Use, Wiring};
use crate::{ConfigError, Services};

/// Builds a function's handler from the services of its cold start.
pub type Builder = fn(&Services) -> Result<HttpHandler, ConfigError>;

/// One route of an HTTP function: the method (upper case) and the path API Gateway matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub method: &'static str,
    pub path: String,
}

/// The routes of the operation a `#[utoipa::path]` describes: a route is written there only,
/// and the registry, the template and the description read it from there.
pub fn routes_of<P: utoipa::Path>() -> Vec<Route> {
    use utoipa::openapi::path::HttpMethod;
    P::methods()
        .into_iter()
        .map(|method| Route {
            method: match method {
                HttpMethod::Get => "GET",
                HttpMethod::Post => "POST",
                HttpMethod::Put => "PUT",
                HttpMethod::Delete => "DELETE",
                HttpMethod::Patch => "PATCH",
                HttpMethod::Head => "HEAD",
                HttpMethod::Options => "OPTIONS",
                HttpMethod::Trace => "TRACE",
            },
            path: P::path(),
        })
        .collect()
}

/// One HTTP function: its binary name (the crate under `functions/`, `BuildProperties.Binary`
/// in `template.yaml`), its routes, its builder, what its cold start builds, and its memory
/// when not the default.
pub struct HttpFunction {
    pub name: &'static str,
    pub routes: fn() -> Vec<Route>,
    pub build: Builder,
    pub wiring: Wiring,
    pub memory_mb: Option<u16>,
}

impl HttpFunction {
    const fn new(
        name: &'static str,
        routes: fn() -> Vec<Route>,
        build: Builder,
        needs: Needs,
    ) -> Self {
        Self {
            name,
            routes,
            build,
            wiring: needs.wiring(),
            memory_mb: None,
        }
    }

    /// A small function (no store, or one read): 128 MB.
    const fn small(self) -> Self {
        Self {
            memory_mb: Some(128),
            ..self
        }
    }
}

/// `GET /health`, also served under each service's path.
fn health_routes() -> Vec<Route> {
    let mut routes = routes_of::<crate::health::__path_health_handler>();
    routes.extend(
        crate::openapi::SERVICE_HEALTH_PATHS
            .iter()
            .map(|path| Route {
                method: "GET",
                path: (*path).to_owned(),
            }),
    );
    routes
}

/// The docs page and its assets.
fn docs_routes() -> Vec<Route> {
    let mut routes = routes_of::<zx_docs::__path_docs_page>();
    routes.extend(routes_of::<zx_docs::__path_docs_asset>());
    routes
}

/// Every HTTP function uses the cache (per-client limits).
const fn needs_users(users: Use) -> Needs {
    Needs {
        users,
        cache: true,
        ..Needs::NONE
    }
}
/// A login or a refresh: reads the user (a login also rehashes a password stored at a lower
/// bcrypt cost), starts or rotates a session.
const fn needs_sessions(sessions: SessionUse) -> Needs {
    Needs {
        users: Use::Read,
        sessions,
        rehash: sessions.start,
        sign: true,
        cache: true,
        ..Needs::NONE
    }
}
/// Catalogue writes are admin routes: they check the caller's session and stored role.
const fn needs_catalogue(products: Use) -> Needs {
    Needs {
        products,
        sessions: if matches!(products, Use::Write) {
            SessionUse::CHECK
        } else {
            SessionUse::NONE
        },
        cache: true,
        ..Needs::NONE
    }
}
/// Placing or moving an order: the order and its outbox rows in one write, then the inventory
/// command and the order event sent.
const fn needs_order_moves(products: Use) -> Needs {
    Needs {
        products,
        orders: Use::Write,
        outbox: Use::Write,
        sends: Sends::ORDER_MOVES,
        sessions: SessionUse::CHECK,
        cache: true,
        ..Needs::NONE
    }
}
/// Order reads: an admin reads anyone's, so the session and stored role are checked.
const fn needs_orders(orders: Use) -> Needs {
    Needs {
        orders,
        sessions: SessionUse::CHECK,
        cache: true,
        ..Needs::NONE
    }
}

pub const HEALTH: HttpFunction = HttpFunction::new(
    "health",
    health_routes,
    health,
    Needs {
        health: true,
        cache: true,
        ..Needs::NONE
    },
);
/// The API description and its page: static, no store, no cache, no limit.
pub const OPENAPI: HttpFunction = HttpFunction::new(
    "openapi",
    routes_of::<crate::openapi::__path_serve_openapi>,
    openapi,
    Needs::NONE,
)
.small();
pub const DOCS: HttpFunction = HttpFunction::new("docs", docs_routes, docs, Needs::NONE).small();
pub const USERS_REGISTER: HttpFunction = HttpFunction::new(
    "users-register",
    routes_of::<zx_users::handlers::__path_register>,
    users_register,
    needs_users(Use::Write),
);
pub const USERS_LOGIN: HttpFunction = HttpFunction::new(
    "users-login",
    routes_of::<zx_users::handlers::__path_login>,
    users_login,
    needs_sessions(SessionUse {
        start: true,
        ..SessionUse::NONE
    }),
);
pub const USERS_REFRESH: HttpFunction = HttpFunction::new(
    "users-refresh",
    routes_of::<zx_users::sessions::__path_refresh>,
    users_refresh,
    needs_sessions(SessionUse {
        rotate: true,
        ..SessionUse::NONE
    }),
);
pub const USERS_LOGOUT: HttpFunction = HttpFunction::new(
    "users-logout",
    routes_of::<zx_users::sessions::__path_logout>,
    users_logout,
    Needs {
        sessions: SessionUse {
            end: true,
            ..SessionUse::NONE
        },
        cache: true,
        ..Needs::NONE
    },
);
pub const USERS_VALIDATE: HttpFunction = HttpFunction::new(
    "users-validate",
    routes_of::<zx_users::handlers::__path_validate>,
    users_validate,
    Needs {
        sessions: SessionUse::CHECK,
        cache: true,
        ..Needs::NONE
    },
)
.small();
pub const USERS_ME: HttpFunction = HttpFunction::new(
    "users-me",
    routes_of::<zx_users::handlers::__path_me>,
    users_me,
    needs_users(Use::Read),
);
pub const USERS_GET: HttpFunction = HttpFunction::new(
    "users-get",
    routes_of::<zx_users::handlers::__path_get_user>,
    users_get,
    Needs {
        sessions: SessionUse::CHECK,
        ..needs_users(Use::Read)
    },
);
pub const USERS_UPDATE: HttpFunction = HttpFunction::new(
    "users-update",
    routes_of::<zx_users::handlers::__path_update_user>,
    users_update,
    Needs {
        sessions: SessionUse::CHECK,
        notify: true,
        ..needs_users(Use::Write)
    },
);
pub const PRODUCTS_LIST: HttpFunction = HttpFunction::new(
    "products-list",
    routes_of::<zx_products::handlers::__path_list_products>,
    products_list,
    needs_catalogue(Use::Read),
);
pub const PRODUCTS_GET: HttpFunction = HttpFunction::new(
    "products-get",
    routes_of::<zx_products::handlers::__path_get_product>,
    products_get,
    needs_catalogue(Use::Read),
);
pub const PRODUCTS_CREATE: HttpFunction = HttpFunction::new(
    "products-create",
    routes_of::<zx_products::handlers::__path_create_product>,
    products_create,
    needs_catalogue(Use::Write),
);
pub const PRODUCTS_UPDATE: HttpFunction = HttpFunction::new(
    "products-update",
    routes_of::<zx_products::handlers::__path_update_product>,
    products_update,
    needs_catalogue(Use::Write),
);
pub const PRODUCTS_DELETE: HttpFunction = HttpFunction::new(
    "products-delete",
    routes_of::<zx_products::handlers::__path_delete_product>,
    products_delete,
    needs_catalogue(Use::Write),
);
pub const STOCK_GET: HttpFunction = HttpFunction::new(
    "stock-get",
    routes_of::<zx_products::stock::__path_get_stock>,
    stock_get,
    needs_catalogue(Use::Read),
);
pub const STOCK_PUT: HttpFunction = HttpFunction::new(
    "stock-put",
    routes_of::<zx_products::stock::__path_put_stock>,
    stock_put,
    needs_catalogue(Use::Write),
);
pub const ORDERS_CREATE: HttpFunction = HttpFunction::new(
    "orders-create",
    routes_of::<zx_orders::http::__path_create_order>,
    orders_create,
    needs_order_moves(Use::Read),
);
pub const ORDERS_GET: HttpFunction = HttpFunction::new(
    "orders-get",
    routes_of::<zx_orders::http::__path_get_order>,
    orders_get,
    needs_orders(Use::Read),
);
pub const ORDERS_LIST: HttpFunction = HttpFunction::new(
    "orders-list",
    routes_of::<zx_orders::http::__path_list_orders>,
    orders_list,
    needs_orders(Use::Read),
);
pub const ORDERS_CANCEL: HttpFunction = HttpFunction::new(
    "orders-cancel",
    routes_of::<zx_orders::http::__path_cancel_order>,
    orders_cancel,
    needs_order_moves(Use::No),
);
pub const ORDERS_UPDATE_STATUS: HttpFunction = HttpFunction::new(
    "orders-update-status",
    routes_of::<zx_orders::http::__path_update_status>,
    orders_update_status,
    needs_order_moves(Use::No),
);

/// Every HTTP function (the local gateway builds them all; each `main.rs` names its own).
pub const HTTP_FUNCTIONS: &[HttpFunction] = &[
    HEALTH,
    OPENAPI,
    DOCS,
    USERS_REGISTER,
    USERS_LOGIN,
    USERS_REFRESH,
    USERS_LOGOUT,
    USERS_VALIDATE,
    USERS_ME,
    USERS_GET,
    USERS_UPDATE,
    PRODUCTS_LIST,
    PRODUCTS_GET,
    PRODUCTS_CREATE,
    PRODUCTS_UPDATE,
    PRODUCTS_DELETE,
    STOCK_GET,
    STOCK_PUT,
    ORDERS_CREATE,
    ORDERS_GET,
    ORDERS_LIST,
    ORDERS_CANCEL,
    ORDERS_UPDATE_STATUS,
];

/// The HTTP function named `binary`.
pub fn function(binary: &str) -> Option<&'static HttpFunction> {
    HTTP_FUNCTIONS.iter().find(|f| f.name == binary)
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
    let edge = Edge::new(access, Some(verifier), limiter);
    if access.checks_standing() {
        let standing =
            zx_users::SessionStanding::new(services.stores.sessions()?, services.cache.clone());
        return Ok(edge.with_standing(Arc::new(standing)));
    }
    Ok(edge)
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

/// `GET /api/v1/openapi.json`.
pub fn openapi(_services: &Services) -> Result<HttpHandler, ConfigError> {
    Ok(Edge::new(Access::Public, None, None).wrap(crate::openapi::serve_openapi))
}

/// `GET /docs` and `GET /docs/{file}`.
pub fn docs(_services: &Services) -> Result<HttpHandler, ConfigError> {
    Ok(
        Edge::new(Access::Public, None, None).wrap(|request: Request| async move {
            if zx_http::path_param(&request, "file").is_ok() {
                zx_docs::docs_asset(request).await
            } else {
                zx_docs::docs_page(request).await
            }
        }),
    )
}

pub fn users_register(services: &Services) -> Result<HttpHandler, ConfigError> {
    let state = (
        services.stores.users()?,
        services.hasher.clone(),
        Arc::new(services.password_guard()?),
    );
    serve(
        services,
        Access::Public,
        Group::Users,
        state,
        |(users, hasher, guard), request| async move {
            zx_users::register(&*users, &hasher, &guard, request).await
        },
    )
}

/// One of the two functions that sign tokens, in KMS (with `users-refresh`).
pub fn users_login(services: &Services) -> Result<HttpHandler, ConfigError> {
    let state = (
        services.stores.users()?,
        services.stores.sessions()?,
        services.hasher.clone(),
        services.issuer()?,
        Arc::new(services.password_guard()?),
    );
    serve(
        services,
        Access::Public,
        Group::Users,
        state,
        |(users, sessions, hasher, issuer, guard), request| async move {
            zx_users::login(&*users, &*sessions, &hasher, &issuer, &guard, request).await
        },
    )
}

/// Signs in KMS: a refresh signs a new access token.
pub fn users_refresh(services: &Services) -> Result<HttpHandler, ConfigError> {
    let state = (
        services.stores.users()?,
        services.stores.sessions()?,
        services.issuer()?,
        services.cache.clone(),
    );
    serve(
        services,
        Access::Public,
        Group::Users,
        state,
        |(users, sessions, issuer, cache), request| async move {
            zx_users::refresh(&*users, &*sessions, &issuer, cache.as_ref(), request).await
        },
    )
}

pub fn users_logout(services: &Services) -> Result<HttpHandler, ConfigError> {
    let state = (services.stores.sessions()?, services.cache.clone());
    serve(
        services,
        Access::Public,
        Group::Users,
        state,
        |(sessions, cache), request| async move {
            zx_users::logout(&*sessions, cache.as_ref(), request).await
        },
    )
}

pub fn users_validate(services: &Services) -> Result<HttpHandler, ConfigError> {
    Ok(edge(services, Access::Checked, Group::Users)?.wrap(zx_users::validate))
}

/// A profile read for the authenticated caller: `handler` gets the users and the request.
fn profile_read<F, Fut>(
    services: &Services,
    access: Access,
    handler: F,
) -> Result<HttpHandler, ConfigError>
where
    F: Fn(Arc<dyn UserRepository>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    let users = services.stores.users()?;
    serve(services, access, Group::Users, users, handler)
}

/// `handler` behind the edge for (`access`, `group`), given its own clone of `state` per
/// request: what every function's builder comes down to.
fn serve<S, F, Fut>(
    services: &Services,
    access: Access,
    group: Group,
    state: S,
    handler: F,
) -> Result<HttpHandler, ConfigError>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(S, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    Ok(edge(services, access, group)?.wrap(move |request| handler(state.clone(), request)))
}

pub fn users_me(services: &Services) -> Result<HttpHandler, ConfigError> {
    profile_read(
        services,
        Access::Authenticated,
        |users, request| async move { zx_users::me(&*users, request).await },
    )
}

pub fn users_get(services: &Services) -> Result<HttpHandler, ConfigError> {
    // An admin reads anyone's profile: the role is the stored one.
    profile_read(services, Access::Checked, |users, request| async move {
        zx_users::get_user(&*users, request).await
    })
}

pub fn users_update(services: &Services) -> Result<HttpHandler, ConfigError> {
    let state = (
        services.stores.users()?,
        services.hasher.clone(),
        Arc::new(services.password_guard()?),
        services
            .cache
            .clone()
            .ok_or(ConfigError::Missing("CACHE_URL"))?,
        services.notifier()?,
    );
    serve(
        services,
        Access::Checked,
        Group::Users,
        state,
        |(users, hasher, guard, cache, notifier), request| async move {
            zx_users::update_user(&*users, &hasher, &guard, &cache, &*notifier, request).await
        },
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
    let state = (services.stores.products()?, services.catalogue_cache());
    serve(
        services,
        access,
        Group::Products,
        state,
        move |(products, cache), request| handler(products, cache, request),
    )
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

/// `GET /products`: searches count against their own per-client limit too.
pub fn products_list(services: &Services) -> Result<HttpHandler, ConfigError> {
    let limits = Arc::new(services.limits.clone());
    catalogue(services, Access::Public, move |products, cache, request| {
        let limits = limits.clone();
        async move { zx_products::list_products(&*products, cache.as_ref(), &limits, request).await }
    })
}
catalogue_function!(
    /// `GET /products/{id}`
    products_get, Access::Public, zx_products::get_product
);
catalogue_function!(
    /// `POST /products` (admin)
    products_create, Access::Admin, zx_products::create_product
);
catalogue_function!(
    /// `PUT /products/{id}` (admin)
    products_update, Access::Admin, zx_products::update_product
);
catalogue_function!(
    /// `DELETE /products/{id}` (admin)
    products_delete, Access::Admin, zx_products::delete_product
);
catalogue_function!(
    /// `PUT /stock/{productId}` (admin)
    stock_put, Access::Admin, zx_products::put_stock
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
fn orders<F, Fut>(
    services: &Services,
    access: Access,
    handler: F,
) -> Result<HttpHandler, ConfigError>
where
    F: Fn(Arc<zx_orders::Saga>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    let saga = Arc::new(services.saga()?);
    // Placing, cancelling and moving orders are writes: the session must still stand.
    serve(services, access, Group::Orders, saga, handler)
}

/// An orders function whose handler takes (saga, request).
macro_rules! orders_function {
    ($(#[$doc:meta])* $name:ident, $access:expr, $handler:path) => {
        $(#[$doc])*
        pub fn $name(services: &Services) -> Result<HttpHandler, ConfigError> {
            orders(services, $access, |saga, request| async move {
                $handler(&saga, request).await
            })
        }
    };
}

orders_function!(
    /// `POST /orders`
    orders_create, Access::Checked, zx_orders::http::create_order
);
/// An order read: authenticated, counted against the orders limit, the orders store only.
fn order_read<F, Fut>(services: &Services, handler: F) -> Result<HttpHandler, ConfigError>
where
    F: Fn(Arc<dyn zx_domain::OrderReader>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    // Reads only: the function is granted reads only.
    let orders: Arc<dyn zx_domain::OrderReader> = services.stores.orders()?;
    // An admin reads every customer's orders: the role is the stored one.
    serve(services, Access::Checked, Group::Orders, orders, handler)
}

/// `GET /orders/{id}`
pub fn orders_get(services: &Services) -> Result<HttpHandler, ConfigError> {
    order_read(services, |orders, request| async move {
        zx_orders::http::get_order(&*orders, request).await
    })
}

/// `GET /orders`
pub fn orders_list(services: &Services) -> Result<HttpHandler, ConfigError> {
    order_read(services, |orders, request| async move {
        zx_orders::http::list_orders(&*orders, request).await
    })
}
orders_function!(
    /// `POST /orders/{id}/cancel`
    orders_cancel, Access::Checked, zx_orders::http::cancel_order
);
orders_function!(
    /// `PATCH /orders/{id}/status` (admin)
    orders_update_status, Access::Admin, zx_orders::http::update_status
);

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use aws_sdk_elasticache::config::Credentials;
    use zx_auth::SigningKey;

    use super::*;
    use crate::config::Source;
    use crate::workers::{OUTBOX_RELAY, SQS_FUNCTIONS, outbox_relay};
    use crate::{Config, StoreKind};

    async fn aws() -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .load()
            .await
    }

    fn config() -> Config {
        let key = SigningKey::generate().unwrap();
        let vars = [
            ("JWT_PRIVATE_KEY", key.to_base64()),
            ("JWT_PUBLIC_KEYS", key.public_key().encoded().to_owned()),
            ("CACHE_URL", "redis://127.0.0.1:1".to_owned()),
            ("INVENTORY_QUEUE_URL", "http://127.0.0.1:1/q/i".to_owned()),
            ("ORDER_QUEUE_URL", "http://127.0.0.1:1/q/o".to_owned()),
            (
                "ORDER_EVENTS_TOPIC_ARN",
                "arn:aws:sns:us-east-1:1:t".to_owned(),
            ),
            (
                "ACCOUNT_NOTICES_TOPIC_ARN",
                "arn:aws:sns:us-east-1:1:n".to_owned(),
            ),
        ];
        let config = Config::from_source(&Source::map(
            vars.into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<HashMap<_, _>>(),
        ))
        .unwrap();
        assert_eq!(config.store, StoreKind::DynamoDb);
        config
    }

    /// Each function's cold start builds only what its `Needs` declare, and its builder finds
    /// everything it uses there (the local gateway, wired with everything, cannot show this).
    #[tokio::test]
    async fn every_function_builds_with_only_what_its_needs_declare() {
        let (config, aws) = (config(), aws().await);
        for function in HTTP_FUNCTIONS {
            let services = Services::build_wired(&config, &aws, &function.wiring)
                .await
                .unwrap();
            let needs = function.wiring.needs;
            assert_eq!(
                services.stores.users.is_some(),
                needs.users.any(),
                "{}",
                function.name
            );
            assert_eq!(
                services.stores.orders.is_some(),
                needs.orders.any(),
                "{}",
                function.name
            );
            assert_eq!(
                services.sender.is_some(),
                needs.sends.any(),
                "{}",
                function.name
            );
            if let Err(error) = (function.build)(&services) {
                panic!(
                    "{} does not build with its own wiring: {error}",
                    function.name
                );
            }
        }
        for function in SQS_FUNCTIONS {
            let services = Services::build_wired(&config, &aws, &function.wiring)
                .await
                .unwrap();
            assert!((function.build)(&services).is_ok(), "{}", function.name);
        }
        let services = Services::build_wired(&config, &aws, &OUTBOX_RELAY)
            .await
            .unwrap();
        assert!(outbox_relay(&services).is_ok());
    }

    #[tokio::test]
    async fn a_builder_without_its_store_names_it() {
        let (config, aws) = (config(), aws().await);
        let wiring = Needs {
            cache: true,
            ..Needs::NONE
        }
        .wiring();
        let services = Services::build_wired(&config, &aws, &wiring).await.unwrap();
        let error = products_get(&services).err().unwrap();
        assert_eq!(
            error.to_string(),
            "this function is not wired with the products store"
        );
        // The saga's stores may be stand-ins, but it cannot run without its sender.
        assert!(matches!(
            orders_create(&services),
            Err(ConfigError::Missing("INVENTORY_QUEUE_URL"))
        ));
    }
}
