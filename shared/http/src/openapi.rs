//! The edge's part of the OpenAPI description: the problem+json answers by status (reusable
//! responses, with their headers), the bearer security scheme, and the headers the edge puts on
//! every response. Handlers name the answers they give in their `#[utoipa::path]`; the ones
//! every operation can give (429, 500, 503) and the common headers are added to every operation
//! by [`EdgeAnswers`].

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, Header, OpenApi, Ref, RefOr, Response, ResponseBuilder, Type,
};

use crate::problem::PROBLEM_JSON;

/// The name of the bearer scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearer";

fn integer_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new().schema_type(Type::Integer),
        ))
        .description(Some(description))
        .build()
}

fn string_header(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(Some(
            utoipa::openapi::ObjectBuilder::new().schema_type(Type::String),
        ))
        .description(Some(description))
        .build()
}

/// A problem+json response.
fn problem(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Problem")))
            .build(),
    )
}

/// Declares reusable problem responses: `Name => "description"`, with extra headers.
macro_rules! problem_responses {
    ($($(#[$doc:meta])* $name:ident => $description:literal $(, $header:literal = $value:expr)* ;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    let response = problem($description)
                        $(.header($header, $value))*
                        .build();
                    (stringify!($name), response.into())
                }
            }
        )*

        /// Every reusable response, for `components(responses(...))`.
        pub fn responses() -> Vec<(String, RefOr<Response>)> {
            vec![$({
                let (name, response) = <$name as utoipa::ToResponse>::response();
                (name.to_owned(), response)
            }),*]
        }
    };
}

problem_responses! {
    /// 400: malformed JSON or invalid fields (`errors` names each and why).
    BadRequest => "Malformed JSON or invalid fields; `errors` names each field and why.";
    /// 401 (RFC 6750).
    Unauthorized => "No valid credentials.",
        "www-authenticate" = string_header("`Bearer realm=\"zhixuan\"`, with `error=\"invalid_token\"` for a bad token.");
    Forbidden => "Authenticated, but not allowed.";
    NotFound => "No such resource, or not one the caller may see.";
    Conflict => "Conflicts with the current state (a taken value, a concurrent change, a transition the state machine refuses).";
    PreconditionFailed => "The `If-Match` tag is stale: the resource changed since it was read; nothing changed.";
    PreconditionRequired => "The change needs `If-Match` with the resource's current `ETag`.";
    PayloadTooLarge => "The body is larger than 64 KiB.";
    UnsupportedMediaType => "The body is not `application/json`.";
    TooManyRequests => "Over this client's per-minute limit.",
        "retry-after" = integer_header("Seconds until the window resets."),
        "ratelimit-limit" = integer_header("Requests allowed per window."),
        "ratelimit-remaining" = integer_header("Requests left in the window (0)."),
        "ratelimit-reset" = integer_header("Seconds until the window resets.");
    InternalError => "Unexpected failure; the body carries only the request id.";
    ServiceUnavailable => "A dependency is unavailable; retry later.",
        "retry-after" = integer_header("Seconds to wait before retrying.");
}

/// What the edge adds to the description of every operation: the answers its shared pieces
/// give, so handlers' `#[utoipa::path]`s list only their own: 400/413/415 for an operation with
/// a JSON body (`json_body`), 401 for one that needs a bearer token (`Edge`), 429 on
/// rate-limited routes, 500 and 503 everywhere; the `RateLimit-*` headers on rate-limited
/// routes, the security headers on every response, and the bearer scheme.
pub struct EdgeAnswers {
    /// Operations without a per-client limit (`operationId`s): health, the description, docs.
    pub unlimited: &'static [&'static str],
}

impl utoipa::Modify for EdgeAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            BEARER.to_owned(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /api/v1/users/login` or `/users/refresh` (EdDSA JWT, 15 minutes by default).",
                    ))
                    .build(),
            )
            .into(),
        );
        for (name, mut response) in responses() {
            if let RefOr::T(response) = &mut response {
                add_headers(response, true);
            }
            components.responses.entry(name).or_insert(response);
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let limited = !operation
                    .operation_id
                    .as_deref()
                    .is_some_and(|id| self.unlimited.contains(&id));
                add_edge_answers(operation, limited);
            }
        }
    }
}

/// Every operation of a path item.
pub fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
    ]
    .into_iter()
    .flatten()
}

fn add_edge_answers(operation: &mut Operation, limited: bool) {
    let has_body = operation.request_body.is_some();
    let needs_token = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    let responses = &mut operation.responses.responses;
    let answers = [
        (has_body, "400", "BadRequest"),
        (needs_token, "401", "Unauthorized"),
        (has_body, "413", "PayloadTooLarge"),
        (has_body, "415", "UnsupportedMediaType"),
        (limited, "429", "TooManyRequests"),
        (true, "500", "InternalError"),
        (true, "503", "ServiceUnavailable"),
    ];
    for (_, status, name) in answers.into_iter().filter(|(applies, ..)| *applies) {
        responses
            .entry(status.into())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    }
    for response in responses.values_mut() {
        if let RefOr::T(response) = response {
            add_headers(response, limited);
        }
    }
}

/// The security headers every response carries, and the `RateLimit-*` headers of a
/// rate-limited route's responses.
fn add_headers(response: &mut Response, limited: bool) {
    {
        let headers = &mut response.headers;
        headers.insert(
            "x-content-type-options".into(),
            string_header("`nosniff`.").into(),
        );
        // An operation that chose another policy says so in its own description.
        headers.entry("cache-control".into()).or_insert_with(|| {
            string_header("`no-store`: nothing here may be kept by a shared cache.").into()
        });
        if limited {
            for (name, description) in [
                (
                    "ratelimit-limit",
                    "Requests allowed per window for this client.",
                ),
                ("ratelimit-remaining", "Requests left in the window."),
                ("ratelimit-reset", "Seconds until the window resets."),
            ] {
                headers
                    .entry(name.into())
                    .or_insert_with(|| integer_header(description).into());
            }
        }
    }
}
