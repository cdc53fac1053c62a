//! CORS as an HTTP API with a `CorsConfiguration` answers it: API Gateway itself answers every
//! preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`), whatever the path,
//! without invoking a function; it adds `Access-Control-Allow-Origin` (and the exposed headers)
//! to responses for an allowed origin, and nothing for any other origin, so the browser refuses
//! the call. The configuration is the template's; the allowed origins are its
//! `CorsAllowedOrigins` parameter (no default: none until `CORS_ALLOWED_ORIGINS` names them).

use http::{HeaderMap, HeaderValue, Method};
use serde_yaml::Value;

use crate::TemplateError;

/// The HTTP API's CORS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    pub allow_methods: Vec<String>,
    /// Lower-case.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<u64>,
}

/// A list in the template: a sequence of strings, or `!Ref` to a comma-delimited parameter
/// (its default).
fn list(template: &Value, value: Option<&Value>) -> Result<Vec<String>, TemplateError> {
    let invalid = |what: &str| TemplateError::Invalid(format!("CorsConfiguration: {what}"));
    match value {
        None => Ok(Vec::new()),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("a list item is not a string"))
            })
            .collect(),
        Some(Value::Tagged(tagged)) if tagged.tag == "Ref" => {
            let name = tagged
                .value
                .as_str()
                .ok_or_else(|| invalid("!Ref of a non-string"))?;
            let parameter = template
                .get("Parameters")
                .and_then(|p| p.get(name))
                .ok_or_else(|| invalid(&format!("no parameter {name}")))?;
            // A parameter without a default (CorsAllowedOrigins) allows nothing until the
            // deployment (or `CORS_ALLOWED_ORIGINS` locally) names origins.
            match parameter.get("Default") {
                None => Ok(Vec::new()),
                Some(default) => Ok(split_list(default.as_str().ok_or_else(|| {
                    invalid(&format!("parameter {name} has a non-string default"))
                })?)),
            }
        }
        Some(_) => Err(invalid("expected a list or !Ref")),
    }
}

/// A comma-separated list, trimmed, without empty items.
pub fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Cors {
    /// The `CorsConfiguration` of the template's `AWS::Serverless::HttpApi`, if any.
    pub fn from_template(template: &Value) -> Result<Option<Self>, TemplateError> {
        let Some(resources) = template.get("Resources").and_then(Value::as_mapping) else {
            return Ok(None);
        };
        let Some(config) = resources
            .values()
            .filter(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::HttpApi"))
            .find_map(|r| r.get("Properties")?.get("CorsConfiguration"))
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            allow_origins: list(template, config.get("AllowOrigins"))?,
            allow_methods: list(template, config.get("AllowMethods"))?,
            allow_headers: list(template, config.get("AllowHeaders"))?
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose_headers: list(template, config.get("ExposeHeaders"))?,
            max_age: config.get("MaxAge").and_then(Value::as_u64),
        }))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }

    /// The `Access-Control-Allow-Origin` value for an allowed origin: `*` when every origin is
    /// allowed (as API Gateway answers), else the origin itself.
    fn allowance<'a>(&self, origin: &'a str) -> &'a str {
        if self.allow_origins.iter().any(|o| o == "*") {
            "*"
        } else {
            origin
        }
    }

    /// Is this request a CORS preflight (answered by the gateway, never routed)?
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(http::header::ORIGIN)
            && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The headers of the answer to a preflight: the allowance when the origin, the method and
    /// every requested header are allowed; none otherwise (the browser then refuses).
    pub fn preflight_headers(&self, headers: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let (Some(origin), Some(method)) = (
            text(http::header::ORIGIN),
            text(http::header::ACCESS_CONTROL_REQUEST_METHOD),
        ) else {
            return out;
        };
        let method_allowed = self
            .allow_methods
            .iter()
            .any(|m| m == "*" || m.eq_ignore_ascii_case(method.trim()));
        let headers_allowed = text(http::header::ACCESS_CONTROL_REQUEST_HEADERS)
            .map(split_list)
            .unwrap_or_default()
            .iter()
            .all(|h| {
                self.allow_headers
                    .iter()
                    .any(|a| a == "*" || a.eq_ignore_ascii_case(h))
            });
        if !(self.origin_allowed(origin) && method_allowed && headers_allowed) {
            return out;
        }
        let mut put = |name, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                out.insert(name, value);
            }
        };
        put(
            http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allowance(origin).to_owned(),
        );
        put(
            http::header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.join(","),
        );
        put(
            http::header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.join(","),
        );
        if let Some(age) = self.max_age {
            put(http::header::ACCESS_CONTROL_MAX_AGE, age.to_string());
        }
        out
    }

    /// Adds the CORS headers of an actual (non-preflight) request's response.
    pub fn decorate(&self, request: &HeaderMap, response: &mut HeaderMap) {
        let Some(origin) = request
            .get(http::header::ORIGIN)
            .and_then(|v| v.to_str().ok())
        else {
            return;
        };
        response.append(http::header::VARY, HeaderValue::from_static("origin"));
        if !self.origin_allowed(origin) {
            return;
        }
        if let Ok(value) = HeaderValue::from_str(self.allowance(origin)) {
            response.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        }
        if !self.expose_headers.is_empty()
            && let Ok(value) = HeaderValue::from_str(&self.expose_headers.join(","))
        {
            response.insert(http::header::ACCESS_CONTROL_EXPOSE_HEADERS, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors() -> Cors {
        let template: Value = serde_yaml::from_str(
            r#"
Parameters:
  Origins: { Type: CommaDelimitedList, Default: "https://shop.example, https://admin.example" }
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      CorsConfiguration:
        AllowOrigins: !Ref Origins
        AllowMethods: [GET, POST]
        AllowHeaders: [Authorization, content-type]
        ExposeHeaders: [x-cache]
        MaxAge: 600
"#,
        )
        .unwrap();
        Cors::from_template(&template).unwrap().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_template_configuration_is_read_through_its_parameter() {
        let cors = cors();
        assert_eq!(
            cors.allow_origins,
            ["https://shop.example", "https://admin.example"]
        );
        assert_eq!(cors.allow_headers, ["authorization", "content-type"]);
        assert_eq!(cors.max_age, Some(600));
    }

    #[test]
    fn a_preflight_is_allowed_only_for_an_allowed_origin_method_and_headers() {
        let cors = cors();
        let allowed = cors.preflight_headers(&headers(&[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, Content-Type",
            ),
        ]));
        assert_eq!(
            allowed["access-control-allow-origin"],
            "https://shop.example"
        );
        assert_eq!(allowed["access-control-max-age"], "600");
        for refused in [
            [
                ("origin", "https://evil.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            [
                ("origin", "https://shop.example"),
                ("access-control-request-method", "DELETE"),
                ("access-control-request-headers", "content-type"),
            ],
            [
                ("origin", "https://shop.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-secret"),
            ],
        ] {
            assert!(cors.preflight_headers(&headers(&refused)).is_empty());
        }
    }

    #[test]
    fn a_wildcard_allows_every_origin_as_api_gateway_says_it() {
        let cors = Cors {
            allow_origins: vec!["*".into()],
            ..cors()
        };
        let mut response = HeaderMap::new();
        cors.decorate(
            &headers(&[("origin", "https://any.example")]),
            &mut response,
        );
        assert_eq!(response["access-control-allow-origin"], "*");
    }

    #[test]
    fn responses_carry_the_allowance_only_for_allowed_origins() {
        let cors = cors();
        let mut response = HeaderMap::new();
        cors.decorate(
            &headers(&[("origin", "https://admin.example")]),
            &mut response,
        );
        assert_eq!(
            response["access-control-allow-origin"],
            "https://admin.example"
        );
        assert_eq!(response["access-control-expose-headers"], "x-cache");
        let mut response = HeaderMap::new();
        cors.decorate(
            &headers(&[("origin", "https://evil.example")]),
            &mut response,
        );
        assert!(!response.contains_key("access-control-allow-origin"));
    }
}
