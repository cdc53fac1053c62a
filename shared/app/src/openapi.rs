//! The API's OpenAPI 3.1 description, generated from the code: the request and response
//! types derive their schemas, each handler carries its `#[utoipa::path]`, the registry of
//! functions hands in the operations (`crate::functions::description`), and the edge adds what
//! every operation shares (`zx_http::openapi::EdgeAnswers`). Served by the `openapi` function
//! at `GET /api/v1/openapi.json`, rendered by `GET /docs`, and written to `docs/openapi.json`
//! by `zx-admin openapi` (a test fails when the file, the served document or the template's
//! routes disagree). This module comes before the registry and does not read it.

use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi;

/// The schemas an operation's description refers to.
pub type Schemas = Vec<(
    String,
    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
)>;

/// Adds one function's operations (and the schemas they refer to) to the description.
pub type Describe = fn(&mut utoipa::openapi::path::Paths, &mut Schemas);

/// The extra routes of `GET /health` (one per service, as the seed had).
pub const SERVICE_HEALTH_PATHS: &[&str] = &[
    "/api/v1/users/health",
    "/api/v1/products/health",
    "/api/v1/stock/health",
];

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Zhixuan (智选) commerce API",
        version = "1.0.0",
        description = "Users, catalogue, stock and orders of the Zhixuan serverless commerce backend. \
Every error is RFC 9457 `application/problem+json`. Protected operations need `Authorization: Bearer <access token>` \
(from `POST /api/v1/users/login` or `/users/refresh`); a missing or bad token is an RFC 6750 401. \
An empty query parameter is the same as an absent one. Every client has per-minute limits (users routes 100, products and stock 1000, orders 500), reported in `RateLimit-*` headers; \
over them: 429 with `Retry-After`. Money is integer minor units (fen); times are RFC 3339 UTC.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(zx_http::problem::Problem, zx_domain::FieldError)),
    tags(
        (name = "users", description = "Registration, sessions (login, refresh, logout) and profiles."),
        (name = "products", description = "The catalogue: public, cached reads; admin writes."),
        (name = "stock", description = "Inventory: availability, and admin changes."),
        (name = "orders", description = "Server-priced, idempotent orders and their state machine."),
        (name = "health", description = "Dependency checks."),
        (name = "docs", description = "This description, for machines and for people."),
    ),
)]
struct ApiDoc;

/// Operations without a per-client limit.
const EDGE: zx_http::openapi::EdgeAnswers = zx_http::openapi::EdgeAnswers {
    unlimited: &[
        "health_handler",
        "users_health",
        "products_health",
        "stock_health",
        "serve_openapi",
        "docs_page",
        "docs_asset",
    ],
};

/// `GET /health` is also served under each service's path: the same operation, its own id.
struct ServiceHealthRoutes;

impl utoipa::Modify for ServiceHealthRoutes {
    fn modify(&self, openapi: &mut OpenApi) {
        let Some(health) = openapi.paths.paths.get("/health").cloned() else {
            return;
        };
        for path in SERVICE_HEALTH_PATHS {
            let mut item = health.clone();
            if let Some(operation) = item.get.as_mut() {
                let service = path
                    .trim_start_matches("/api/v1/")
                    .trim_end_matches("/health");
                operation.operation_id = Some(format!("{service}_health"));
            }
            openapi.paths.paths.insert((*path).to_owned(), item);
        }
    }
}

/// A handler's doc comment becomes its operation's description; its first sentence, the
/// summary.
struct Summaries;

impl utoipa::Modify for Summaries {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in zx_http::openapi::operations(item) {
                let Some(text) = operation.summary.take() else {
                    continue;
                };
                let text = text.replace('\n', " ");
                let first = match text.find(". ") {
                    Some(end) => text.get(..=end).unwrap_or(&text).to_owned(),
                    None => text.clone(),
                };
                if first.len() < text.len() {
                    operation.description.get_or_insert(text);
                }
                operation.summary = Some(first);
            }
        }
    }
}

/// The description: the document's head (`ApiDoc`), the operations each of `operations` adds
/// (every HTTP function's: an operation is listed nowhere else), and what the edge adds to
/// each.
pub fn document(operations: &[Describe]) -> OpenApi {
    let mut openapi = ApiDoc::openapi();
    let mut schemas = Vec::new();
    for describe in operations {
        describe(&mut openapi.paths, &mut schemas);
    }
    openapi
        .components
        .get_or_insert_with(utoipa::openapi::Components::new)
        .schemas
        .extend(schemas);
    let modifiers: [&dyn utoipa::Modify; 3] = [&ServiceHealthRoutes, &Summaries, &EDGE];
    for modifier in modifiers {
        modifier.modify(&mut openapi);
    }
    openapi
}

/// The description as served and as written to `docs/openapi.json`: pretty JSON and a final
/// newline.
pub fn render(operations: &[Describe]) -> String {
    let mut text = document(operations)
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "docs",
    responses(
        (status = 200, description = "This OpenAPI 3.1 description.", content_type = "application/json", body = Object,
            headers(("cache-control" = String, description = "`no-cache`: public, revalidated on every use."))),
    ))]
/// `GET /api/v1/openapi.json`.
// `description` is built once per instance by the registry (`crate::functions::description`).
pub async fn serve_openapi(
    description: &'static str,
    _request: lambda_http::Request,
) -> Result<lambda_http::Response<lambda_http::Body>, zx_http::ApiError> {
    let mut response = lambda_http::Response::new(lambda_http::Body::Text(description.to_owned()));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    // Public and the same for everyone until the next deployment.
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}
