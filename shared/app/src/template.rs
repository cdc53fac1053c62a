//! The per-function blocks of `template.yaml`, generated from the registry: each function's
//! resource (build metadata, memory and timeout when not the default, environment, IAM
//! statements derived from its [`Needs`], events) and its error alarm. `zx-admin template`
//! writes them between the markers; a test fails when the committed file differs. Everything
//! else in the template (tables, queues, the API, the VPC, parameters) stays hand-written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use zx_store_dynamodb::iam;

use crate::capabilities::Needs;
use crate::functions::{HTTP_FUNCTIONS, Route};
use crate::permissions::permissions;
use crate::workers::{
    BATCH_SIZE, MAX_CONCURRENT_BATCHES, OUTBOX_RELAY, OUTBOX_RELAY_NAME, RELAY_SCHEDULE,
    RELAY_TIMEOUT_SECONDS, SQS_FUNCTIONS,
};

/// The line before the generated blocks.
pub const BEGIN: &str = "  # BEGIN generated: `cargo run -p zx-app --bin zx-admin -- template` writes from here to END; do not edit";
/// The line after them.
pub const END: &str = "  # END generated";

/// What invokes a function.
enum Events {
    Http(Vec<Route>),
    Queue(&'static str),
    Schedule,
}

/// One function as the template describes it.
struct Function {
    binary: &'static str,
    needs: Needs,
    memory_mb: Option<u16>,
    timeout_s: Option<u16>,
    environment: Vec<(&'static str, &'static str)>,
    events: Events,
}

/// Every function, in the registry's order.
fn functions() -> Vec<Function> {
    let worker_pool = ("PG_MAX_CONNECTIONS", "!Ref WorkerPgConnections");
    let mut all: Vec<Function> = HTTP_FUNCTIONS
        .iter()
        .map(|f| {
            let needs = f.needs;
            let mut environment = Vec::new();
            if needs.sign {
                environment.push(("JWT_SIGNING_KEY_ID", "!Ref JwtSigningKeyArn"));
            }
            if needs.notify {
                environment.push(("ACCOUNT_NOTICES_TOPIC_ARN", "!Ref AccountNoticesTopic"));
            }
            Function {
                binary: f.name,
                needs,
                memory_mb: f.memory_mb,
                timeout_s: None,
                environment,
                events: Events::Http((f.routes)()),
            }
        })
        .collect();
    all.extend(SQS_FUNCTIONS.iter().map(|f| Function {
        binary: f.name,
        needs: f.needs,
        memory_mb: None,
        timeout_s: None,
        environment: vec![worker_pool],
        events: Events::Queue(f.queue),
    }));
    all.push(Function {
        binary: OUTBOX_RELAY_NAME,
        needs: OUTBOX_RELAY,
        memory_mb: None,
        timeout_s: Some(RELAY_TIMEOUT_SECONDS),
        environment: vec![worker_pool],
        events: Events::Schedule,
    });
    all
}

/// `users-login` → `UsersLoginFunction`.
pub fn logical_id(binary: &str) -> String {
    let mut id: String = binary
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    id.push_str("Function");
    id
}

/// An event's name from its route: `GET /api/v1/users/{id}` → `GetUsersId`.
fn event_name(route: &Route) -> String {
    let mut name = String::new();
    let method = route.method.to_ascii_lowercase();
    for word in std::iter::once(method.as_str()).chain(
        route
            .path
            .split(['/', '.', '-'])
            .filter(|w| !w.is_empty() && *w != "api" && *w != "v1"),
    ) {
        let word = word.trim_start_matches('{').trim_end_matches('}');
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.push_str(chars.as_str());
        }
    }
    name
}

/// One IAM statement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Statement {
    actions: BTreeSet<&'static str>,
    /// Logical ids (`X/index/*` for a table's indexes).
    resources: Vec<String>,
    /// `dynamodb:LeadingKeys` the items must have.
    leading_keys: Option<BTreeSet<&'static str>>,
    /// The rehash's limits: only these attributes, no values returned.
    rehash: bool,
}

/// The users table's grants of a function that handles sessions, item by item: the session
/// functions (login, refresh, logout) can never write a user item.
fn per_item_user_grants(needs: &Needs, actions: &BTreeSet<&'static str>) -> Vec<Statement> {
    let sessions = needs.sessions;
    let mut keys: BTreeMap<&'static str, BTreeSet<&'static str>> = BTreeMap::new();
    let mut grant = |action: &'static str, items: &[&'static str]| {
        keys.entry(action)
            .or_default()
            .extend(items.iter().copied());
    };
    if needs.users.any() {
        // Reading a user; a login finds it by e-mail first.
        grant("dynamodb:GetItem", &[iam::USER_ITEMS]);
        if sessions.start {
            grant("dynamodb:GetItem", &[iam::EMAIL_ITEMS]);
        }
    }
    if sessions.start {
        grant("dynamodb:PutItem", &[iam::SESSION_ITEMS]);
    }
    if sessions.rotate {
        grant("dynamodb:GetItem", &[iam::SESSION_ITEMS]);
        grant("dynamodb:UpdateItem", &[iam::SESSION_ITEMS]);
        grant("dynamodb:ConditionCheckItem", &[iam::USER_ITEMS]);
    }
    if sessions.end {
        grant("dynamodb:GetItem", &[iam::SESSION_ITEMS]);
        grant("dynamodb:UpdateItem", &[iam::SESSION_ITEMS]);
    }
    if sessions.check {
        grant("dynamodb:GetItem", &[iam::SESSION_ITEMS, iam::USER_ITEMS]);
    }
    let mut statements = Vec::new();
    if needs.rehash {
        statements.push(Statement {
            actions: iam::USERS_REHASH.iter().copied().collect(),
            resources: vec!["UsersTable".into()],
            leading_keys: Some(BTreeSet::from([iam::USER_ITEMS])),
            rehash: true,
        });
    }
    // Actions with the same items share a statement; an action the map does not cover would
    // be granted on every item, so there is none (checked by a test).
    let mut by_keys: BTreeMap<BTreeSet<&'static str>, BTreeSet<&'static str>> = BTreeMap::new();
    for action in actions {
        if let Some(items) = keys.get(action) {
            by_keys.entry(items.clone()).or_default().insert(action);
        } else if !(needs.rehash && iam::USERS_REHASH.contains(action)) {
            by_keys.entry(BTreeSet::new()).or_default().insert(action);
        }
    }
    for (items, actions) in by_keys {
        statements.push(Statement {
            actions,
            resources: vec!["UsersTable".into()],
            leading_keys: (!items.is_empty()).then_some(items),
            rehash: false,
        });
    }
    statements
}

/// A function's IAM statements: [`permissions`], resources with the same actions in one
/// statement, the cache's first.
fn statements(needs: &Needs) -> Vec<Statement> {
    let mut granted = permissions(needs);
    let mut statements = Vec::new();
    let session_writer = needs.sessions.start || needs.sessions.rotate || needs.sessions.end;
    if session_writer && let Some(actions) = granted.remove("UsersTable") {
        statements.extend(per_item_user_grants(needs, &actions));
    }
    let mut by_actions: BTreeMap<BTreeSet<&'static str>, Vec<String>> = BTreeMap::new();
    for (resource, actions) in granted {
        by_actions.entry(actions).or_default().push(resource);
    }
    let mut rest: Vec<Statement> = by_actions
        .into_iter()
        .map(|(actions, resources)| Statement {
            actions,
            resources,
            leading_keys: None,
            rehash: false,
        })
        .collect();
    // The cache's statement first, then by resource.
    rest.sort_by(|a, b| {
        let not_cache = |s: &Statement| s.resources.iter().all(|r| r != "Cache");
        (not_cache(a), &a.resources).cmp(&(not_cache(b), &b.resources))
    });
    rest.extend(statements);
    rest
}

/// A resource as the template names it.
fn resource_lines(resource: &str) -> Vec<String> {
    if resource == "Cache" {
        return vec![
            "!GetAtt Cache.ARN".into(),
            "!Sub \"arn:${AWS::Partition}:elasticache:${AWS::Region}:${AWS::AccountId}:replicationgroup:${Cache}\"".into(),
        ];
    }
    if let Some(table) = resource.strip_suffix("/index/*") {
        return vec![format!("!Sub \"${{{table}.Arn}}/index/*\"")];
    }
    if resource.ends_with("Topic") || resource.ends_with("KeyArn") {
        return vec![format!("!Ref {resource}")];
    }
    vec![format!("!GetAtt {resource}.Arn")]
}

fn yaml_list(items: impl IntoIterator<Item = impl AsRef<str>>, quote: bool) -> String {
    let items: Vec<String> = items
        .into_iter()
        .map(|i| {
            if quote {
                format!("\"{}\"", i.as_ref())
            } else {
                i.as_ref().to_owned()
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

fn write_statement(out: &mut String, statement: &Statement) {
    let actions: Vec<&str> = statement.actions.iter().copied().collect();
    let action = match actions.as_slice() {
        [one] => (*one).to_owned(),
        many => yaml_list(many, false),
    };
    let _ = writeln!(out, "            - Effect: Allow");
    let _ = writeln!(out, "              Action: {action}");
    let _ = writeln!(out, "              Resource:");
    for resource in &statement.resources {
        for line in resource_lines(resource) {
            let _ = writeln!(out, "                - {line}");
        }
    }
    if let Some(keys) = &statement.leading_keys {
        let _ = writeln!(out, "              Condition:");
        let _ = writeln!(out, "                ForAllValues:StringLike:");
        let _ = writeln!(
            out,
            "                  dynamodb:LeadingKeys: {}",
            yaml_list(keys, true)
        );
        if statement.rehash {
            let _ = writeln!(out, "                ForAllValues:StringEquals:");
            let _ = writeln!(
                out,
                "                  dynamodb:Attributes: {}",
                yaml_list(iam::REHASH_ATTRIBUTES, false)
            );
            let _ = writeln!(out, "                StringEqualsIfExists:");
            let _ = writeln!(out, "                  dynamodb:ReturnValues: NONE");
        }
    }
}

fn write_function(out: &mut String, function: &Function) {
    let id = logical_id(function.binary);
    let _ = writeln!(out, "  {id}:");
    let _ = writeln!(out, "    Type: AWS::Serverless::Function");
    let _ = writeln!(out, "    Metadata:");
    let _ = writeln!(out, "      BuildMethod: rust-cargolambda");
    let _ = writeln!(
        out,
        "      BuildProperties: {{ Binary: {} }}",
        function.binary
    );
    let _ = writeln!(out, "    Properties:");
    let _ = writeln!(out, "      CodeUri: .");
    if let Some(memory) = function.memory_mb {
        let _ = writeln!(out, "      MemorySize: {memory}");
    }
    if let Some(timeout) = function.timeout_s {
        let _ = writeln!(out, "      Timeout: {timeout}");
    }
    if !function.environment.is_empty() {
        let _ = writeln!(out, "      Environment:");
        let _ = writeln!(out, "        Variables:");
        for (name, value) in &function.environment {
            let _ = writeln!(out, "          {name}: {value}");
        }
    }
    let statements = statements(&function.needs);
    let store = function.needs.uses_a_store();
    if store || !statements.is_empty() {
        let _ = writeln!(out, "      Policies:");
        if store {
            let _ = writeln!(
                out,
                "        - !If [IsPostgres, !Ref DatabaseConnectPolicy, !Ref AWS::NoValue]"
            );
        }
        if !statements.is_empty() {
            let _ = writeln!(out, "        - Statement:");
            for statement in &statements {
                write_statement(out, statement);
            }
        }
    }
    let _ = writeln!(out, "      Events:");
    match &function.events {
        Events::Http(routes) => {
            for route in routes {
                let path = if route.path.contains('{') {
                    format!("\"{}\"", route.path)
                } else {
                    route.path.clone()
                };
                let _ = writeln!(out, "        {}:", event_name(route));
                let _ = writeln!(out, "          Type: HttpApi");
                let _ = writeln!(
                    out,
                    "          Properties: {{ ApiId: !Ref HttpApi, Path: {path}, Method: {} }}",
                    route.method
                );
            }
        }
        Events::Queue(queue) => {
            let _ = writeln!(out, "        Queue:");
            let _ = writeln!(out, "          Type: SQS");
            let _ = writeln!(out, "          Properties:");
            let _ = writeln!(out, "            Queue: !GetAtt {queue}.Arn");
            let _ = writeln!(out, "            BatchSize: {BATCH_SIZE}");
            let _ = writeln!(out, "            MaximumBatchingWindowInSeconds: 0");
            let _ = writeln!(
                out,
                "            FunctionResponseTypes: [ReportBatchItemFailures]"
            );
            let _ = writeln!(
                out,
                "            # Bounds concurrent batches (and so Postgres connections with Store=postgres)."
            );
            let _ = writeln!(
                out,
                "            ScalingConfig: {{ MaximumConcurrency: {MAX_CONCURRENT_BATCHES} }}"
            );
        }
        Events::Schedule => {
            let _ = writeln!(out, "        Schedule:");
            let _ = writeln!(out, "          Type: Schedule");
            let _ = writeln!(out, "          Properties:");
            let _ = writeln!(out, "            Schedule: {RELAY_SCHEDULE}");
        }
    }
    let _ = writeln!(out);
}

fn write_alarm(out: &mut String, binary: &str) {
    let id = logical_id(binary);
    for line in [
        format!("  {id}ErrorsAlarm:"),
        "    Type: AWS::CloudWatch::Alarm".into(),
        "    Properties:".into(),
        format!("      AlarmDescription: {id} failed invocations."),
        "      Namespace: AWS/Lambda".into(),
        "      MetricName: Errors".into(),
        format!("      Dimensions: [{{ Name: FunctionName, Value: !Ref {id} }}]"),
        "      Statistic: Sum".into(),
        "      Period: 300".into(),
        "      EvaluationPeriods: 1".into(),
        "      Threshold: 0".into(),
        "      ComparisonOperator: GreaterThanThreshold".into(),
        "      TreatMissingData: notBreaching".into(),
        "      AlarmActions: [!Ref AlarmTopic]".into(),
        String::new(),
    ] {
        let _ = writeln!(out, "{line}");
    }
}

/// The generated blocks: every function's resource, then every function's error alarm.
pub fn generated() -> String {
    let functions = functions();
    let mut out = String::new();
    for function in &functions {
        write_function(&mut out, function);
    }
    for function in &functions {
        write_alarm(&mut out, function.binary);
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("template.yaml lacks the lines {BEGIN:?} and {END:?}, in that order")]
pub struct MissingMarkers;

/// `template` with the generated blocks between its markers replaced by [`generated`].
pub fn regenerate(template: &str) -> Result<String, MissingMarkers> {
    let (head, rest) = template.split_once(BEGIN).ok_or(MissingMarkers)?;
    let (_, tail) = rest.split_once(END).ok_or(MissingMarkers)?;
    Ok(format!("{head}{BEGIN}\n{}{END}{tail}", generated()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
        std::fs::read_to_string(path).expect("template.yaml")
    }

    #[test]
    fn the_committed_template_is_what_the_registry_generates() {
        let committed = committed();
        let regenerated = regenerate(&committed).expect("markers");
        assert!(
            regenerated == committed,
            "template.yaml is stale: run `cargo run -p zx-app --bin zx-admin -- template`"
        );
    }

    /// The dashboard and the alarms read the metrics the code emits: every catalogued metric
    /// is on the dashboard, and every metric of our namespace the template names is catalogued.
    #[test]
    fn the_dashboard_and_alarms_name_the_emitted_metrics() {
        let template = committed();
        let dashboard = template
            .split("OperationsDashboard:")
            .nth(1)
            .expect("a dashboard")
            .split("\n  # ----")
            .next()
            .unwrap_or_default();
        for metric in zx_domain::metrics::ALL {
            assert!(
                dashboard.contains(&format!("\"{}\"", metric.name))
                    || dashboard.contains(&format!("\\\"{}\\\"", metric.name)),
                "{} is not on the dashboard",
                metric.name
            );
        }
        // Metrics of our namespace named by the dashboard and by the alarms.
        let ours: Vec<&str> = dashboard
            .split("[\"${Namespace}\", \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .chain(template.split("MetricName: ").skip(1).filter_map(|rest| {
                let name = rest.lines().next()?.trim();
                let before = template.split(&format!("MetricName: {name}")).next()?;
                let namespace = before.rsplit("Namespace: ").next()?.lines().next()?;
                namespace.contains("Zhixuan/").then_some(name)
            }))
            .collect();
        assert!(ours.len() > 10, "{ours:?}");
        for name in ours {
            assert!(
                zx_domain::metrics::metric(name).is_some()
                    || ["RefreshReplays", "AccountLocks"].contains(&name),
                "{name} is not a catalogued metric (nor a security event counted by a filter)"
            );
        }
    }

    #[test]
    fn a_template_without_its_markers_is_refused() {
        assert!(regenerate("Resources:\n").is_err());
        assert!(regenerate(&format!("{END}\n{BEGIN}\n")).is_err());
    }

    #[test]
    fn names_are_the_templates() {
        assert_eq!(logical_id("users-login"), "UsersLoginFunction");
        assert_eq!(logical_id("openapi"), "OpenapiFunction");
        let route = Route {
            method: "PUT",
            path: "/api/v1/users/{id}".into(),
        };
        assert_eq!(event_name(&route), "PutUsersId");
    }

    /// The session functions are granted users-table items by key, every action they use
    /// covered: none is granted on every item.
    #[test]
    fn the_session_functions_are_granted_item_by_item() {
        for function in functions() {
            let sessions = function.needs.sessions;
            if !(sessions.start || sessions.rotate || sessions.end) {
                continue;
            }
            for statement in statements(&function.needs) {
                if statement.resources.iter().any(|r| r == "UsersTable") {
                    assert!(
                        statement.leading_keys.is_some(),
                        "{}: {statement:?}",
                        function.binary
                    );
                    if statement.actions.contains("dynamodb:PutItem")
                        || statement.actions.contains("dynamodb:UpdateItem") && !statement.rehash
                    {
                        assert_eq!(
                            statement.leading_keys,
                            Some(BTreeSet::from([iam::SESSION_ITEMS])),
                            "{}",
                            function.binary
                        );
                    }
                }
            }
        }
    }
}
