//! The API docs page: `GET /docs` renders `GET /api/v1/openapi.json` with Swagger UI, whose
//! assets come from npm (pinned in `package-lock.json`) and are embedded in the binary at build
//! time (`build.rs`), so the page works offline and loads nothing from elsewhere (its
//! `Content-Security-Policy` says so to the browser too).

use lambda_http::{Body, Request, Response};
use zx_http::{ApiError, path_param};

/// One embedded file: name under `/docs/`, content type, bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! built {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/assets/", $name))
    };
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "swagger-ui-bundle.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: built!("swagger-ui-bundle.js"),
    },
    Asset {
        name: "swagger-ui.css",
        content_type: "text/css; charset=utf-8",
        bytes: built!("swagger-ui.css"),
    },
    Asset {
        name: "favicon-32x32.png",
        content_type: "image/png",
        bytes: built!("favicon-32x32.png"),
    },
    Asset {
        name: "init.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../static/init.js"),
    },
];

const PAGE: &[u8] = include_bytes!("../static/index.html");

/// Swagger UI styles itself inline; everything else comes from this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The embedded assets' total size, for the record (docs/benchmarks.md).
pub fn embedded_bytes() -> usize {
    PAGE.len() + ASSETS.iter().map(|a| a.bytes.len()).sum::<usize>()
}

fn file(content_type: &'static str, bytes: &'static [u8], cache: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::Binary(bytes.to_vec()));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static(cache),
    );
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(CSP),
    );
    headers.insert(
        http::header::X_FRAME_OPTIONS,
        http::HeaderValue::from_static("DENY"),
    );
    response
}

#[utoipa::path(get, path = "/docs", tag = "docs",
    responses(
        (status = 200, description = "This description, rendered for people (Swagger UI).", content_type = "text/html", body = String,
            headers(
                ("cache-control" = String, description = "`no-cache`: revalidated on every visit."),
                ("content-security-policy" = String, description = "Only this origin's scripts, styles and data."),
            )),
    ))]
/// `GET /docs`: the page.
pub async fn docs_page(_request: Request) -> Result<Response<Body>, ApiError> {
    Ok(file("text/html; charset=utf-8", PAGE, "no-cache"))
}

#[utoipa::path(get, path = "/docs/{file}", tag = "docs",
    params(("file" = String, Path, description = "An asset of the page.")),
    responses(
        (status = 200, description = "The asset: a script, a style sheet or an icon.", content(
            (String = "text/javascript"),
            (String = "text/css"),
            (Vec<u8> = "image/png"),
        ), headers(("cache-control" = String, description = "`public, max-age=3600`: the same for everyone until the next deployment."))),
        (status = 404, response = zx_http::openapi::NotFound),
    ))]
/// `GET /docs/{file}`: one of the page's assets.
pub async fn docs_asset(request: Request) -> Result<Response<Body>, ApiError> {
    let name = path_param(&request, "file")?;
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    // Assets change only with a deployment: an hour in the browser is enough.
    Ok(file(
        asset.content_type,
        asset.bytes,
        "public, max-age=3600",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_assets() {
        let page = std::str::from_utf8(PAGE).unwrap();
        for reference in [
            "/docs/swagger-ui.css",
            "/docs/swagger-ui-bundle.js",
            "/docs/init.js",
        ] {
            let name = reference.trim_start_matches("/docs/");
            assert!(page.contains(reference), "{reference}");
            assert!(ASSETS.iter().any(|a| a.name == name), "{name}");
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(ASSETS.iter().all(|a| !a.bytes.is_empty()));
        assert!(embedded_bytes() > 1_000_000, "Swagger UI is embedded");
    }
}
