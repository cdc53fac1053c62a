//! Request input: JSON bodies (content type, size, strict shape) and path parameters, each
//! failure a 400/413/415 that names what is wrong.

use lambda_http::{Request, RequestExt};
use serde::de::DeserializeOwned;

use crate::ApiError;

/// The largest request body any handler accepts. Every JSON body of this API is small.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Parses the JSON body into `T`. Use request types with `#[serde(deny_unknown_fields)]` so
/// unknown fields are rejected too.
pub fn json_body<T: DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    let bytes: &[u8] = request.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    if !is_json(request.headers().get(http::header::CONTENT_TYPE)) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Err(ApiError::bad_request(
            "request body is empty; a JSON object is required",
        ));
    };
    // serde reads a struct from an array too (by position): only objects are bodies here.
    if *first != b'{' {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(describe)?;
    deserializer.end().map_err(|_| {
        ApiError::bad_request("malformed JSON: trailing characters after the object")
    })?;
    Ok(value)
}

fn is_json(content_type: Option<&http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn describe(error: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = error.path().to_string();
    let inner = error.inner();
    let message = inner.to_string();
    let message = message
        .rfind(" at line ")
        .map_or(message.as_str(), |at| &message[..at])
        .to_owned();
    if !inner.is_data() {
        return ApiError::bad_request(format!("malformed JSON: {message}"));
    }
    // "missing field `email`": the path is the parent, the field is in backticks. For unknown
    // fields and wrong types the path already ends at the field.
    let names_field =
        message.starts_with("missing field") || message.starts_with("duplicate field");
    let named = message.split('`').nth(1).filter(|_| names_field);
    let field = match (named, path.as_str()) {
        (Some(name), "." | "") => name.to_owned(),
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, ".") => "body".to_owned(),
        (None, path) => path.to_owned(),
    };
    let message = if message.starts_with("missing field") {
        "is required".to_owned()
    } else if message.starts_with("unknown field") {
        "is not allowed".to_owned()
    } else if message.starts_with("duplicate field") {
        "is given more than once".to_owned()
    } else if message.starts_with("invalid value: integer") {
        // A whole number too large (or negative) for the field's type.
        "is out of range".to_owned()
    } else if let Some((_, expected)) = message.split_once(", expected ") {
        // "invalid type: integer `12345678`, expected a string": never echo the value (it may
        // be a password) into the response or the logs.
        format!("must be {}", in_api_terms(expected))
    } else {
        "has an invalid value".to_owned()
    };
    ApiError::invalid_field(&field, message)
}

/// What serde expected, in the words of a JSON API rather than of Rust types.
fn in_api_terms(expected: &str) -> &str {
    match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize" => {
            "a whole number"
        }
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a sequence" => "an array",
        "a map" => "a JSON object",
        other if other.starts_with("struct ") => "a JSON object",
        other => other,
    }
}

/// A path parameter the route guarantees (`{id}`); absent only if the routing is miswired.
pub fn path_param<'a>(request: &'a Request, name: &str) -> Result<&'a str, ApiError> {
    request
        .path_parameters_ref()
        .and_then(|params| params.first(name))
        .ok_or_else(|| ApiError::internal(format!("route has no path parameter {name:?}")))
}

/// A query string parameter, if present (the first value when repeated). An empty value is
/// the same as none (`?cursor=` is the first page, `?search=` no filter), as HTML forms and
/// clients that always send every parameter expect.
pub fn query_param<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .query_string_parameters_ref()
        .and_then(|params| params.first(name))
        .filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Login {
        email: String,
        password: String,
    }

    fn request(content_type: Option<&str>, body: &str) -> Request {
        let mut builder = http::Request::builder().method("POST").uri("/x");
        if let Some(ct) = content_type {
            builder = builder.header("content-type", ct);
        }
        builder.body(Body::from(body)).unwrap()
    }

    fn field_of(error: ApiError) -> (u16, String) {
        let status = error.status();
        match error {
            ApiError::BadRequest { errors, .. } => (
                status,
                errors.first().map(|e| e.field.clone()).unwrap_or_default(),
            ),
            _ => (status, String::new()),
        }
    }

    #[test]
    fn parses_json_with_charset() {
        let ok: Login = json_body(&request(
            Some("application/json; charset=utf-8"),
            r#"{"email":"a@b.co","password":"x"}"#,
        ))
        .unwrap();
        assert_eq!(ok.email, "a@b.co");
    }

    #[test]
    fn bad_inputs_map_to_named_problems() {
        let cases = [
            (
                Some("text/plain"),
                r#"{"email":"a","password":"b"}"#,
                415,
                "",
            ),
            (None, r#"{"email":"a","password":"b"}"#, 415, ""),
            (Some("application/json"), r#"{"email":"a","#, 400, ""),
            (
                Some("application/json"),
                r#"{"email":"a"}"#,
                400,
                "password",
            ),
            (
                Some("application/json"),
                r#"{"email":"a","password":"b","role":"admin"}"#,
                400,
                "role",
            ),
            (
                Some("application/json"),
                r#"{"email":5,"password":"b"}"#,
                400,
                "email",
            ),
            (Some("application/json"), r#"[]"#, 400, "body"),
            (Some("application/json"), "", 400, ""),
            (
                Some("application/json"),
                r#"{"email":"a","password":"b"} x"#,
                400,
                "",
            ),
        ];
        for (ct, body, status, field) in cases {
            let error = json_body::<Login>(&request(ct, body)).unwrap_err();
            assert_eq!(field_of(error), (status, field.to_owned()), "{ct:?} {body}");
        }
    }

    #[test]
    fn type_errors_do_not_echo_the_value() {
        let error = json_body::<Login>(&request(
            Some("application/json"),
            r#"{"email":"a@b.co","password":987654321}"#,
        ))
        .unwrap_err();
        let detail = error.to_string();
        assert!(!detail.contains("987654321"), "{detail}");
        assert!(
            detail.contains("password") && detail.contains("must be a string"),
            "{detail}"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Priced {
        price: i64,
        tags: Vec<String>,
        active: bool,
    }

    #[test]
    fn messages_speak_json_not_rust() {
        let message =
            |body: &str| match json_body::<Priced>(&request(Some("application/json"), body)) {
                Err(ApiError::BadRequest { errors, .. }) => errors
                    .first()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .unwrap_or_default(),
                other => panic!("{body}: {other:?}"),
            };
        let cases = [
            (
                r#"{"price":"100","tags":[],"active":true}"#,
                "price: must be a whole number",
            ),
            (
                r#"{"price":1.5,"tags":[],"active":true}"#,
                "price: must be a whole number",
            ),
            (
                r#"{"price":9223372036854775808,"tags":[],"active":true}"#,
                "price: is out of range",
            ),
            (
                r#"{"price":1,"tags":{},"active":true}"#,
                "tags: must be an array",
            ),
            (
                r#"{"price":1,"tags":[],"active":"yes"}"#,
                "active: must be true or false",
            ),
            (r#"[]"#, "body: must be a JSON object"),
            (r#"null"#, "body: must be a JSON object"),
            (r#"[1,2]"#, "body: must be a JSON object"),
            (r#" "x""#, "body: must be a JSON object"),
            (
                r#"{"price":1,"price":2,"tags":[],"active":true}"#,
                "price: is given more than once",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(message(body), expected, "{body}");
        }
    }

    #[test]
    fn oversized_bodies_are_413() {
        let big = format!(
            r#"{{"email":"{}","password":"b"}}"#,
            "a".repeat(MAX_BODY_BYTES)
        );
        let error = json_body::<Login>(&request(Some("application/json"), &big)).unwrap_err();
        assert_eq!(error.status(), 413);
    }
}
