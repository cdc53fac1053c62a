//! Every HTTP function, declared once with [`http_function!`](crate::http_function): its
//! binary name, routes (read from its handler's `#[utoipa::path]`), access (`Public`,
//! `Authenticated`, `Checked`, `Admin`: the one admin check, in the edge), per-client limit
//! group, dependencies (ports, `crate::ports`) and handler. Its needs, and so its IAM grant,
//! follow from those types. Each function's `main.rs` runs its declaration through
//! [`crate::run_http`]; the local gateway runs [`HTTP_FUNCTIONS`] through the same builders, so
//! it runs the deployed code; the template, the permissions and the sample events read the same
//! list.

use std::future::Future;
use std::sync::Arc;

use lambda_http::{Body, Request, Response};
use zx_auth::{PasswordHasher, TokenIssuer};
use zx_cache::Cache;
use zx_domain::{
    CategoryReader, Notifier, OrderReader, ProductReader, ProductRepository, SessionEnding,
    SessionRotation, SessionStarter, StandingReader, UserReader, UserRepository, UserSignIn,
};
use zx_http::{Access, ApiError, Edge, HttpHandler, RouteLimit};
use zx_users::PasswordGuard;

use crate::capabilities::{Needs, OrderMoves, SessionUse};
use crate::openapi::{Describe, Schemas};
use crate::ports::{HealthChecks, Moving, Port};
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

/// What a function serves, from its handlers' `#[utoipa::path]`s: its routes, and its part of
/// the API description (`crate::openapi` assembles every function's).
pub trait Operations {
    fn routes() -> Vec<Route>;
    fn describe(paths: &mut utoipa::openapi::path::Paths, schemas: &mut Schemas);
}

/// The operation of one `#[utoipa::path]` (its `__path_<handler>` type).
pub struct Op<P>(std::marker::PhantomData<P>);

impl<P> Operations for Op<P>
where
    P: utoipa::Path + utoipa::__dev::SchemaReferences + utoipa::__dev::Tags<'static>,
{
    fn routes() -> Vec<Route> {
        routes_of::<P>()
    }
    /// What `#[derive(OpenApi)]` does for each of its `paths(...)`: the operation with its
    /// tags, and the schemas it refers to.
    fn describe(paths: &mut utoipa::openapi::path::Paths, schemas: &mut Schemas) {
        let mut operation = P::operation();
        operation
            .tags
            .get_or_insert_with(Vec::new)
            .extend(P::tags().into_iter().map(str::to_owned));
        paths.add_path_operation(P::path(), P::methods(), operation);
        P::schemas(schemas);
    }
}

/// Two operations of one function (the docs page and its assets).
impl<A: Operations, B: Operations> Operations for (A, B) {
    fn routes() -> Vec<Route> {
        let mut routes = A::routes();
        routes.extend(B::routes());
        routes
    }
    fn describe(paths: &mut utoipa::openapi::path::Paths, schemas: &mut Schemas) {
        A::describe(paths, schemas);
        B::describe(paths, schemas);
    }
}

/// One HTTP function: its binary name (the crate under `functions/`, `BuildProperties.Binary`
/// in `template.yaml`), its routes, its builder, what its cold start builds and is granted,
/// and its memory when not the default.
pub struct HttpFunction {
    pub name: &'static str,
    pub routes: fn() -> Vec<Route>,
    /// Adds the function's operations to the API description.
    pub describe: Describe,
    pub build: Builder,
    pub needs: Needs,
    pub memory_mb: Option<u16>,
}

/// The seed's Kong services: which per-client limit a route counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Users,
    Products,
    Orders,
}

/// What the edge itself needs: the cache to count requests per client (a limit group), and
/// the session standing of `Checked` and `Admin` callers.
pub const fn edge_needs(access: Access, limit: Option<Group>) -> Needs {
    Needs {
        cache: limit.is_some(),
        sessions: if access.checks_standing() {
            SessionUse::CHECK
        } else {
            SessionUse::NONE
        },
        ..Needs::NONE
    }
}

/// Declares an HTTP function: `$name` becomes an [`HttpFunction`] whose routes and description
/// are its `operations`' (`Op<__path_handler>`: the route is written in the handler's
/// `#[utoipa::path]` only), whose builder wires its `ports` and puts `$body` behind the edge
/// for (`access`, `limit`), and whose needs are the edge's and the ports' together.
///
/// A handler that uses what its ports do not offer does not compile: here the function's
/// port reads orders, and the handler tries to write one.
///
/// ```compile_fail,E0599
/// use std::sync::Arc;
/// use zx_app::functions::Group;
/// use zx_domain::OrderReader;
/// use zx_http::Access;
///
/// zx_app::http_function! {
///     const SNEAKY = "sneaky" {
///         operations: (),
///         access: Access::Checked,
///         limit: Some(Group::Orders),
///         ports: Arc<dyn OrderReader>,
///         handler: |orders, _request| {
///             let order = orders.find_order(&zx_domain::OrderId::generate()).await?;
///             if let Some(order) = order {
///                 orders.update_order(&order, &order, &[]).await?;
///             }
///             zx_http::json_response(200, &())
///         }
///     }
/// }
/// ```
///
/// The same function, reading only, compiles (`crate::functions::tests` builds it).
#[macro_export]
macro_rules! http_function {
    (
        $(#[$doc:meta])*
        $vis:vis const $name:ident = $binary:literal {
            operations: $operations:ty,
            access: $access:expr,
            limit: $limit:expr,
            $(memory_mb: $memory:expr,)?
            ports: $ty:ty,
            handler: |$deps:pat_param, $request:ident| $body:expr $(,)?
        }
    ) => {
        $(#[$doc])*
        $vis const $name: $crate::functions::HttpFunction = {
            fn build(
                services: &$crate::Services,
            ) -> ::std::result::Result<$crate::functions::__private::HttpHandler, $crate::ConfigError>
            {
                $crate::functions::serve::<$ty, _, _>(
                    services,
                    $access,
                    $limit,
                    |$deps: $ty, $request: $crate::functions::__private::Request| async move { $body },
                )
            }
            $crate::functions::HttpFunction {
                name: $binary,
                routes: <$operations as $crate::functions::Operations>::routes,
                describe: <$operations as $crate::functions::Operations>::describe,
                build,
                needs: $crate::functions::edge_needs($access, $limit)
                    .and(<$ty as $crate::ports::Port>::NEEDS),
                memory_mb: $crate::functions::memory_mb(&[$($memory)?]),
            }
        };
    };
}

/// A memory size when one is given (the default otherwise).
pub const fn memory_mb(given: &[u16]) -> Option<u16> {
    match given {
        [mb] => Some(*mb),
        _ => None,
    }
}

/// What [`http_function!`](crate::http_function) names from outside this crate.
#[doc(hidden)]
pub mod __private {
    pub use lambda_http::Request;
    pub use zx_http::HttpHandler;
}

/// The edge of a function: it verifies bearer tokens (required unless `Public`, and used to
/// tell clients apart everywhere), counts requests per client for `limit` (none without a
/// group: health, the description, the docs), and checks the session standing (and stored
/// role) of `Checked` and `Admin` callers.
fn edge(services: &Services, access: Access, limit: Option<Group>) -> Result<Edge, ConfigError> {
    let verifier = if access.needs_token() || limit.is_some() {
        Some(services.verifier()?)
    } else {
        None
    };
    let Some(group) = limit else {
        return with_standing(services, access, Edge::new(access, verifier, None));
    };
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
    with_standing(services, access, Edge::new(access, verifier, limiter))
}

/// `edge`, checking the session standing (and stored role) of `Checked` and `Admin` callers.
fn with_standing(services: &Services, access: Access, edge: Edge) -> Result<Edge, ConfigError> {
    if !access.checks_standing() {
        return Ok(edge);
    }
    let sessions = <Arc<dyn StandingReader> as Port>::wire(services)?;
    let standing = zx_users::SessionStanding::new(sessions, services.cache.clone());
    Ok(edge.with_standing(Arc::new(standing)))
}

/// `handler` behind the edge for (`access`, `limit`), given its own clone of the ports `D` per
/// request: what every function's builder comes down to.
pub fn serve<D, F, Fut>(
    services: &Services,
    access: Access,
    limit: Option<Group>,
    handler: F,
) -> Result<HttpHandler, ConfigError>
where
    D: Port,
    F: Fn(D, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, ApiError>> + Send + 'static,
{
    let deps = D::wire(services)?;
    Ok(edge(services, access, limit)?.wrap(move |request| handler(deps.clone(), request)))
}

/// `GET /health`, also served under each service's path (the description adds those paths
/// itself: `crate::openapi::SERVICE_HEALTH_PATHS`).
pub struct HealthOperations;

impl Operations for HealthOperations {
    fn routes() -> Vec<Route> {
        let mut routes = Op::<crate::health::__path_health_handler>::routes();
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
    fn describe(paths: &mut utoipa::openapi::path::Paths, schemas: &mut Schemas) {
        Op::<crate::health::__path_health_handler>::describe(paths, schemas);
    }
}

/// No operation (tests).
impl Operations for () {
    fn routes() -> Vec<Route> {
        Vec::new()
    }
    fn describe(_: &mut utoipa::openapi::path::Paths, _: &mut Schemas) {}
}

http_function! {
    /// `GET /health` (and `/api/v1/<service>/health`): no token, no limit.
    pub const HEALTH = "health" {
        operations: HealthOperations,
        access: Access::Public,
        limit: None,
        ports: HealthChecks,
        handler: |health, request| {
            crate::health_handler(&health.checks, health.timeout, request).await
        },
    }
}

http_function! {
    /// `GET /api/v1/openapi.json`: static, no store, no cache, no limit.
    pub const OPENAPI = "openapi" {
        operations: Op<crate::openapi::__path_serve_openapi>,
        access: Access::Public,
        limit: None,
        memory_mb: 128,
        ports: (),
        handler: |_none, request| crate::openapi::serve_openapi(description(), request).await,
    }
}

http_function! {
    /// `GET /docs` and `GET /docs/{file}`.
    pub const DOCS = "docs" {
        operations: (Op<zx_docs::__path_docs_page>, Op<zx_docs::__path_docs_asset>),
        access: Access::Public,
        limit: None,
        memory_mb: 128,
        ports: (),
        handler: |_none, request| {
            if zx_http::path_param(&request, "file").is_ok() {
                zx_docs::docs_asset(request).await
            } else {
                zx_docs::docs_page(request).await
            }
        },
    }
}

http_function! {
    pub const USERS_REGISTER = "users-register" {
        operations: Op<zx_users::handlers::__path_register>,
        access: Access::Public,
        limit: Some(Group::Users),
        ports: (Arc<dyn UserRepository>, Passwords),
        handler: |(users, (hasher, guard)), request| {
            zx_users::register(&*users, &hasher, &guard, request).await
        },
    }
}

http_function! {
    /// One of the two functions that sign tokens, in KMS (with `users-refresh`); it rehashes a
    /// password stored at a lower bcrypt cost.
    pub const USERS_LOGIN = "users-login" {
        operations: Op<zx_users::handlers::__path_login>,
        access: Access::Public,
        limit: Some(Group::Users),
        ports: (Arc<dyn UserSignIn>, Arc<dyn SessionStarter>, Passwords, Issuer),
        handler: |(users, sessions, (hasher, guard), issuer), request| {
            zx_users::login(&*users, &*sessions, &hasher, &issuer, &guard, request).await
        },
    }
}

http_function! {
    /// Signs in KMS: a refresh signs a new access token.
    pub const USERS_REFRESH = "users-refresh" {
        operations: Op<zx_users::sessions::__path_refresh>,
        access: Access::Public,
        limit: Some(Group::Users),
        ports: (Arc<dyn UserReader>, Arc<dyn SessionRotation>, Issuer, Option<Cache>),
        handler: |(users, sessions, issuer, cache), request| {
            zx_users::refresh(&*users, &*sessions, &issuer, cache.as_ref(), request).await
        },
    }
}

http_function! {
    pub const USERS_LOGOUT = "users-logout" {
        operations: Op<zx_users::sessions::__path_logout>,
        access: Access::Public,
        limit: Some(Group::Users),
        ports: (Arc<dyn SessionEnding>, Option<Cache>),
        handler: |(sessions, cache), request| {
            zx_users::logout(&*sessions, cache.as_ref(), request).await
        },
    }
}

http_function! {
    pub const USERS_VALIDATE = "users-validate" {
        operations: Op<zx_users::handlers::__path_validate>,
        access: Access::Checked,
        limit: Some(Group::Users),
        memory_mb: 128,
        ports: (),
        handler: |_none, request| zx_users::validate(request).await,
    }
}

http_function! {
    pub const USERS_ME = "users-me" {
        operations: Op<zx_users::handlers::__path_me>,
        access: Access::Authenticated,
        limit: Some(Group::Users),
        ports: Arc<dyn UserReader>,
        handler: |users, request| zx_users::me(&*users, request).await,
    }
}

http_function! {
    /// An admin reads anyone's profile: the role is the stored one.
    pub const USERS_GET = "users-get" {
        operations: Op<zx_users::handlers::__path_get_user>,
        access: Access::Checked,
        limit: Some(Group::Users),
        ports: Arc<dyn UserReader>,
        handler: |users, request| zx_users::get_user(&*users, request).await,
    }
}

http_function! {
    pub const USERS_UPDATE = "users-update" {
        operations: Op<zx_users::handlers::__path_update_user>,
        access: Access::Checked,
        limit: Some(Group::Users),
        ports: (Arc<dyn UserRepository>, Passwords, Cache, Arc<dyn Notifier>),
        handler: |(users, (hasher, guard), cache, notifier), request| {
            zx_users::update_user(&*users, &hasher, &guard, &cache, &*notifier, request).await
        },
    }
}

/// Checking passwords: the hasher, and the limits that guard it.
type Passwords = (PasswordHasher, Arc<PasswordGuard>);
/// Signing access tokens.
type Issuer = Arc<TokenIssuer>;

/// The catalogue store and its cache view.
type Catalogue<P> = (Arc<P>, Option<zx_products::CatalogueCache>);

http_function! {
    /// `GET /products`: searches count against their own per-client limit too.
    pub const PRODUCTS_LIST = "products-list" {
        operations: Op<zx_products::handlers::__path_list_products>,
        access: Access::Public,
        limit: Some(Group::Products),
        ports: (Catalogue<dyn ProductReader>, Arc<zx_cache::ClientLimits>),
        handler: |((products, cache), limits), request| {
            zx_products::list_products(&*products, cache.as_ref(), &limits, request).await
        },
    }
}

http_function! {
    pub const PRODUCTS_GET = "products-get" {
        operations: Op<zx_products::handlers::__path_get_product>,
        access: Access::Public,
        limit: Some(Group::Products),
        ports: Catalogue<dyn ProductReader>,
        handler: |(products, cache), request| {
            zx_products::get_product(&*products, cache.as_ref(), request).await
        },
    }
}

http_function! {
    pub const PRODUCTS_CREATE = "products-create" {
        operations: Op<zx_products::handlers::__path_create_product>,
        access: Access::Admin,
        limit: Some(Group::Products),
        ports: Catalogue<dyn ProductRepository>,
        handler: |(products, cache), request| {
            zx_products::create_product(&*products, cache.as_ref(), request).await
        },
    }
}

http_function! {
    pub const PRODUCTS_UPDATE = "products-update" {
        operations: Op<zx_products::handlers::__path_update_product>,
        access: Access::Admin,
        limit: Some(Group::Products),
        ports: Catalogue<dyn ProductRepository>,
        handler: |(products, cache), request| {
            zx_products::update_product(&*products, cache.as_ref(), request).await
        },
    }
}

http_function! {
    pub const PRODUCTS_DELETE = "products-delete" {
        operations: Op<zx_products::handlers::__path_delete_product>,
        access: Access::Admin,
        limit: Some(Group::Products),
        ports: Catalogue<dyn ProductRepository>,
        handler: |(products, cache), request| {
            zx_products::delete_product(&*products, cache.as_ref(), request).await
        },
    }
}

http_function! {
    /// `GET /categories`: the catalogue's categories and their product counts, cached.
    pub const CATEGORIES_LIST = "categories-list" {
        operations: Op<zx_products::categories::__path_list_categories>,
        access: Access::Public,
        limit: Some(Group::Products),
        memory_mb: 128,
        ports: (Arc<dyn CategoryReader>, Option<zx_products::CatalogueCache>),
        handler: |(categories, cache), request| {
            zx_products::list_categories(&*categories, cache.as_ref(), request).await
        },
    }
}

http_function! {
    pub const STOCK_GET = "stock-get" {
        operations: Op<zx_products::stock::__path_get_stock>,
        access: Access::Public,
        limit: Some(Group::Products),
        ports: Arc<dyn ProductReader>,
        handler: |products, request| {
            zx_products::get_stock(&*products, request).await
        },
    }
}

http_function! {
    pub const STOCK_PUT = "stock-put" {
        operations: Op<zx_products::stock::__path_put_stock>,
        access: Access::Admin,
        limit: Some(Group::Products),
        ports: Catalogue<dyn ProductRepository>,
        handler: |(products, cache), request| {
            zx_products::put_stock(&*products, cache.as_ref(), request).await
        },
    }
}

http_function! {
    /// Placing an order: the order and its outbox rows in one write, then the reserve and the
    /// event sent.
    pub const ORDERS_CREATE = "orders-create" {
        operations: Op<zx_orders::http::__path_create_order>,
        access: Access::Checked,
        limit: Some(Group::Orders),
        ports: zx_orders::Placement,
        handler: |placement, request| {
            zx_orders::http::create_order(&placement, request).await
        },
    }
}

http_function! {
    /// An admin reads every customer's orders: the role is the stored one. Reads only.
    pub const ORDERS_GET = "orders-get" {
        operations: Op<zx_orders::http::__path_get_order>,
        access: Access::Checked,
        limit: Some(Group::Orders),
        ports: Arc<dyn OrderReader>,
        handler: |orders, request| {
            zx_orders::http::get_order(&*orders, request).await
        },
    }
}

http_function! {
    pub const ORDERS_LIST = "orders-list" {
        operations: Op<zx_orders::http::__path_list_orders>,
        access: Access::Checked,
        limit: Some(Group::Orders),
        ports: Arc<dyn OrderReader>,
        handler: |orders, request| {
            zx_orders::http::list_orders(&*orders, request).await
        },
    }
}

http_function! {
    pub const ORDERS_CANCEL = "orders-cancel" {
        operations: Op<zx_orders::http::__path_cancel_order>,
        access: Access::Checked,
        limit: Some(Group::Orders),
        ports: Moving<OrderMoves>,
        handler: |moving, request| {
            zx_orders::http::cancel_order(&moving.0, request).await
        },
    }
}

http_function! {
    pub const ORDERS_UPDATE_STATUS = "orders-update-status" {
        operations: Op<zx_orders::http::__path_update_status>,
        access: Access::Admin,
        limit: Some(Group::Orders),
        ports: Moving<OrderMoves>,
        handler: |moving, request| {
            zx_orders::http::update_status(&moving.0, request).await
        },
    }
}

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
    CATEGORIES_LIST,
    STOCK_GET,
    STOCK_PUT,
    ORDERS_CREATE,
    ORDERS_GET,
    ORDERS_LIST,
    ORDERS_CANCEL,
    ORDERS_UPDATE_STATUS,
];

/// The API description of every HTTP function (`crate::openapi`), built once per instance:
/// what the `openapi` function serves and `zx-admin openapi` writes.
pub fn description() -> &'static str {
    static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JSON.get_or_init(|| {
        let operations: Vec<Describe> = HTTP_FUNCTIONS.iter().map(|f| f.describe).collect();
        crate::openapi::render(&operations)
    })
}

/// The HTTP function named `binary`.
pub fn function(binary: &str) -> Option<&'static HttpFunction> {
    HTTP_FUNCTIONS.iter().find(|f| f.name == binary)
}

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

    /// Each function's cold start builds only what its ports need, and its builder finds
    /// everything it uses there (the local gateway, built with everything, cannot show this).
    #[tokio::test]
    async fn every_function_builds_with_only_what_its_ports_need() {
        let (config, aws) = (config(), aws().await);
        for function in HTTP_FUNCTIONS {
            let services = Services::build_for(&config, &aws, &function.needs)
                .await
                .unwrap();
            assert_eq!(
                services.cache.is_some(),
                function.needs.cache,
                "{}",
                function.name
            );
            if let Err(error) = (function.build)(&services) {
                panic!(
                    "{} does not build with its own needs: {error}",
                    function.name
                );
            }
        }
        for function in SQS_FUNCTIONS {
            let services = Services::build_for(&config, &aws, &function.needs)
                .await
                .unwrap();
            assert!((function.build)(&services).is_ok(), "{}", function.name);
        }
        let services = Services::build_for(&config, &aws, &OUTBOX_RELAY)
            .await
            .unwrap();
        assert!(outbox_relay(&services).is_ok());
    }

    #[tokio::test]
    async fn a_cold_start_without_a_store_refuses_naming_it() {
        let (config, aws) = (config(), aws().await);
        let needs = Needs {
            cache: true,
            ..Needs::NONE
        };
        let services = Services::build_for(&config, &aws, &needs).await.unwrap();
        let error = (PRODUCTS_GET.build)(&services).err().unwrap();
        assert_eq!(
            error.to_string(),
            "this function is not wired with the products store"
        );
        assert!(matches!(
            (ORDERS_CREATE.build)(&services),
            Err(ConfigError::NotWired("orders"))
        ));
    }

    /// The one guard left at run time: a sender refuses destinations outside its port's set
    /// and says so, so a transition leaves those messages in the outbox for the relay.
    #[tokio::test]
    async fn a_sender_sends_only_where_its_port_allows() {
        use crate::capabilities::SendSet as _;
        use zx_domain::Destination;
        let services = Services::build_for(&config(), &aws().await, &Needs::NONE)
            .await
            .unwrap();
        let sender = services
            .sender(crate::capabilities::OrderAnswers::SENDS)
            .unwrap();
        assert!(sender.sends_to(Destination::OrderEvents));
        assert!(!sender.sends_to(Destination::InventoryQueue));
        let release = zx_orders::messages::release(&zx_domain::OrderId::generate());
        let refused = sender.send(&release).await.unwrap_err();
        assert_eq!(
            zx_domain::cause_chain(&refused),
            "send failed: this function does not send to InventoryQueue"
        );
        let refused = sender
            .dead_letter(Destination::InventoryQueue, "{", "malformed")
            .await
            .unwrap_err();
        assert!(!refused.is_transient());
    }

    http_function! {
        /// The doctest of `http_function!` that must not compile, reading only: it compiles,
        /// and it needs what reading orders behind a checked edge needs.
        const READER = "reader" {
            operations: (),
            access: Access::Checked,
            limit: Some(Group::Orders),
            ports: Arc<dyn OrderReader>,
            handler: |orders, _request| {
                let order = orders.find_order(&zx_domain::OrderId::generate()).await?;
                zx_http::json_response(200, &order.is_some())
            },
        }
    }

    #[test]
    fn a_function_needs_what_its_edge_and_its_ports_need() {
        use crate::capabilities::Use;
        assert_eq!(
            READER.needs,
            Needs {
                orders: Use::Read,
                sessions: SessionUse::CHECK,
                cache: true,
                ..Needs::NONE
            }
        );
        // Signing follows from the issuer port: only the two functions that take it sign.
        let signers: Vec<&str> = HTTP_FUNCTIONS
            .iter()
            .filter(|f| f.needs.sign)
            .map(|f| f.name)
            .collect();
        assert_eq!(signers, ["users-login", "users-refresh"]);
    }

    #[test]
    fn the_description_is_openapi_3_1_with_every_operation_answering_problems() {
        let doc: serde_json::Value = serde_json::from_str(description()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 20, "{}", paths.len());
        for (path, item) in paths {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                for status in ["500", "503"] {
                    assert!(responses.contains_key(status), "{method} {path}: {status}");
                }
            }
        }
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
