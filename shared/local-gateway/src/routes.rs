//! Routes as `template.yaml` declares them: each `AWS::Serverless::Function` with `HttpApi`
//! events and its binary (`Metadata.BuildProperties.Binary`). There is no authorizer: every
//! function authenticates inside (see `zx_http::Edge`).

use serde_yaml::Value;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template is not valid YAML")]
    Yaml(#[from] serde_yaml::Error),
    #[error("template: {0}")]
    Invalid(String),
}

/// One `METHOD /path` of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: String,
    pub path: String,
    /// The function's binary name (its crate under `functions/`).
    pub function: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

impl Route {
    pub fn new(method: &str, path: &str, function: &str) -> Self {
        let segments = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) => match name.strip_suffix('+') {
                        Some(name) => Segment::Greedy(name.to_owned()),
                        None => Segment::Param(name.to_owned()),
                    },
                    None => Segment::Literal(s.to_owned()),
                },
            )
            .collect();
        Self {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            function: function.to_owned(),
            segments,
        }
    }

    /// The route key API Gateway reports (`GET /api/v1/users/{id}`).
    pub fn key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// The path parameters when `method` and `path` match.
    pub fn matches(&self, method: &str, path: &str) -> Option<Vec<(String, String)>> {
        if self.method != "ANY" && !self.method.eq_ignore_ascii_case(method) {
            return None;
        }
        self.match_path(path)
    }

    /// The path parameters when `path` matches, whatever the method.
    pub fn match_path(&self, path: &str) -> Option<Vec<(String, String)>> {
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(i) != Some(&literal.as_str()) {
                        return None;
                    }
                }
                Segment::Param(name) => {
                    let value = parts.get(i)?;
                    params.push((name.clone(), decode(value)));
                }
                Segment::Greedy(name) => {
                    let rest = parts.get(i..).filter(|rest| !rest.is_empty())?;
                    params.push((name.clone(), decode(&rest.join("/"))));
                    return Some(params);
                }
            }
        }
        (parts.len() == self.segments.len()).then_some(params)
    }

    /// API Gateway's precedence, segment by segment from the left: a literal beats a
    /// parameter, which beats a greedy parameter. Lower sorts first.
    fn precedence(&self) -> Vec<u8> {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Literal(_) => 0,
                Segment::Param(_) => 1,
                Segment::Greedy(_) => 2,
            })
            .collect()
    }
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

/// Every route of the template, most specific first.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub routes: Vec<Route>,
    /// The HTTP API's CORS configuration, if it has one.
    pub cors: Option<crate::Cors>,
}

fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

impl RouteTable {
    pub fn from_template(yaml: &str) -> Result<Self, TemplateError> {
        let template: Value = serde_yaml::from_str(yaml)?;
        let resources = template
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| TemplateError::Invalid("no Resources".into()))?;
        let binary_of = |logical_id: &str| -> Option<String> {
            let resource = resources.get(logical_id)?;
            get(resource, &["Metadata", "BuildProperties", "Binary"])
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let mut routes = Vec::new();
        for (logical_id, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let logical_id = logical_id.as_str().unwrap_or_default();
            let Some(events) = get(resource, &["Properties", "Events"]).and_then(Value::as_mapping)
            else {
                continue;
            };
            for (_, event) in events {
                if event.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                    continue;
                }
                let function = binary_of(logical_id).ok_or_else(|| {
                    TemplateError::Invalid(format!("{logical_id} has no BuildProperties.Binary"))
                })?;
                let props = event.get("Properties");
                let path = props.and_then(|p| p.get("Path")).and_then(Value::as_str);
                let method = props.and_then(|p| p.get("Method")).and_then(Value::as_str);
                let (Some(path), Some(method)) = (path, method) else {
                    return Err(TemplateError::Invalid(format!(
                        "{logical_id}: HttpApi event without Path/Method"
                    )));
                };
                routes.push(Route::new(method, path, &function));
            }
        }
        routes.sort_by(|a, b| {
            a.precedence()
                .cmp(&b.precedence())
                .then_with(|| a.path.cmp(&b.path))
        });
        let cors = crate::Cors::from_template(&template)?;
        Ok(Self { routes, cors })
    }

    /// The same routes with these allowed CORS origins (`CORS_ALLOWED_ORIGINS`) in place of
    /// the template parameter's default.
    pub fn with_allowed_origins(mut self, origins: Vec<String>) -> Self {
        if let Some(cors) = &mut self.cors {
            cors.allow_origins = origins;
        }
        self
    }

    /// The route for a request and its path parameters.
    pub fn find(&self, method: &str, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        // Sorted by precedence, so the first match is the most specific one.
        self.routes
            .iter()
            .find_map(|route| route.matches(method, path).map(|params| (route, params)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_beat_parameters() {
        let template =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml"))
                .unwrap();
        let table = RouteTable::from_template(&template).unwrap();
        let (route, params) = table.find("GET", "/api/v1/users/me").unwrap();
        assert_eq!(route.function, "users-me");
        assert!(params.is_empty());
        let (route, params) = table.find("GET", "/api/v1/users/abc").unwrap();
        assert_eq!(route.function, "users-get");
        assert_eq!(params, vec![("id".to_owned(), "abc".to_owned())]);
        let (route, _) = table.find("POST", "/api/v1/users/login").unwrap();
        assert_eq!(route.function, "users-login");
        assert!(table.find("DELETE", "/api/v1/users/abc").is_none());
        let (route, params) = table.find("GET", "/api/v1/users/health").unwrap();
        assert_eq!(route.function, "health");
        assert!(params.is_empty());
    }
}
