//! Routes as `template.yaml` declares them: each `AWS::Serverless::Function` with `HttpApi`
//! events, its binary (`Metadata.BuildProperties.Binary`), and whether the API's default
//! authorizer applies.

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
    /// Whether the authorizer runs before the function.
    pub protected: bool,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Greedy(String),
}

impl Route {
    pub fn new(method: &str, path: &str, function: &str, protected: bool) -> Self {
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
            protected,
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
                    if i >= parts.len() {
                        return None;
                    }
                    params.push((name.clone(), decode(&parts[i..].join("/"))));
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

/// Every route of the template, most specific first, and the authorizer's binary.
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub routes: Vec<Route>,
    pub authorizer: Option<String>,
}

fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

fn untag(value: &Value) -> &Value {
    match value {
        Value::Tagged(tagged) => &tagged.value,
        other => other,
    }
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
        // The HTTP API's default authorizer, as a function binary.
        let mut authorizer = None;
        let mut has_default_authorizer = false;
        for (_, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::HttpApi") {
                continue;
            }
            let Some(auth) = get(resource, &["Properties", "Auth"]) else {
                continue;
            };
            let Some(default) = auth.get("DefaultAuthorizer").and_then(Value::as_str) else {
                continue;
            };
            has_default_authorizer = true;
            let arn = get(auth, &["Authorizers", default, "FunctionArn"]).map(untag);
            let logical_id = arn
                .and_then(Value::as_str)
                .map(|s| s.split('.').next().unwrap_or(s).to_owned())
                .ok_or_else(|| {
                    TemplateError::Invalid(format!("authorizer {default} has no FunctionArn"))
                })?;
            authorizer = Some(binary_of(&logical_id).ok_or_else(|| {
                TemplateError::Invalid(format!(
                    "authorizer function {logical_id} has no BuildProperties.Binary"
                ))
            })?);
        }
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
                let authorizer_name = props
                    .and_then(|p| get(p, &["Auth", "Authorizer"]))
                    .and_then(Value::as_str);
                let protected = has_default_authorizer && authorizer_name != Some("NONE");
                routes.push(Route::new(method, path, &function, protected));
            }
        }
        routes.sort_by(|a, b| {
            a.precedence()
                .cmp(&b.precedence())
                .then_with(|| a.path.cmp(&b.path))
        });
        Ok(Self { routes, authorizer })
    }

    /// The route for a request and its path parameters.
    pub fn find(&self, method: &str, path: &str) -> Option<(&Route, Vec<(String, String)>)> {
        // Sorted by precedence, so the first match is the most specific one.
        self.routes
            .iter()
            .find_map(|route| route.matches(method, path).map(|params| (route, params)))
    }

    /// Whether some route has this path under another method (405 rather than 404).
    pub fn path_exists(&self, path: &str) -> bool {
        self.routes
            .iter()
            .any(|route| route.match_path(path).is_some())
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
        assert_eq!(table.authorizer.as_deref(), Some("authorizer"));
        let (route, params) = table.find("GET", "/api/v1/users/me").unwrap();
        assert_eq!(
            (route.function.as_str(), route.protected),
            ("users-me", true)
        );
        assert!(params.is_empty());
        let (route, params) = table.find("GET", "/api/v1/users/abc").unwrap();
        assert_eq!(route.function, "users-get");
        assert_eq!(params, vec![("id".to_owned(), "abc".to_owned())]);
        let (route, _) = table.find("POST", "/api/v1/users/login").unwrap();
        assert!(!route.protected);
        assert!(table.find("DELETE", "/api/v1/users/abc").is_none());
        assert!(table.path_exists("/api/v1/users/abc"));
        let (route, params) = table.find("GET", "/api/v1/users/health").unwrap();
        assert_eq!(
            (route.function.as_str(), route.protected),
            ("health", false)
        );
        assert!(params.is_empty());
    }
}
