//! End-to-end: the orders saga over HTTP through the local gateway, with the workers fed by
//! pollers of real LocalStack queues (as the template's event source mappings would), on each
//! backend. Every test runs against DynamoDB and Postgres.

use std::collections::HashMap;

use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use zx_domain::{OrderId, ProductId, Role, Timestamp, UserId};
use zx_local_gateway::{Pollers, Workers};
use zx_tests::{Store, TestApp};

/// How long the saga may take to settle in a test before it counts as stuck.
const SETTLE: Duration = Duration::from_secs(30);

struct Shop {
    base: String,
    http: Client,
    app: TestApp,
    workers: Workers,
}

impl Shop {
    async fn start(store: Store) -> Self {
        Self::with(store, &[]).await
    }

    async fn with(store: Store, extra: &[(&str, &str)]) -> Self {
        Self::on(TestApp::with(store, &zx_tests::aws_endpoint(), extra).await).await
    }

    async fn on(app: TestApp) -> Self {
        let base = app.gateway().await;
        let workers = app.workers();
        Self {
            base,
            http: Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
            app,
            workers,
        }
    }

    /// Polls the queues for every worker (or those named).
    fn pollers(&self, functions: &[&str]) -> Pollers {
        self.app.start_pollers(&self.workers, functions)
    }

    /// A customer stored with a session: placing, cancelling and moving orders check the
    /// caller's session and stored role.
    async fn customer(&self) -> (UserId, String) {
        self.app.stored_user_token(Role::Customer).await
    }

    async fn admin(&self) -> String {
        self.app.stored_user_token(Role::Admin).await.1
    }

    async fn product(&self, available: i64, price: i64) -> ProductId {
        let product = zx_tests::sample_product("Lamp", "a desk lamp", "home", price, available);
        self.app
            .services
            .products()
            .unwrap()
            .create_product(&product)
            .await
            .unwrap();
        product.id
    }

    /// The product as the store has it now.
    async fn stored(&self, id: &ProductId) -> zx_domain::Product {
        let products = self.app.services.products().unwrap();
        products.find_product(id).await.unwrap().unwrap()
    }

    async fn stock(&self, id: &ProductId) -> (i64, i64) {
        let product = self.stored(id).await;
        (product.stock.available, product.stock.reserved)
    }

    async fn order(&self, token: &str, key: &str, body: Value) -> Response {
        self.http
            .post(format!("{}/api/v1/orders", self.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// One unit of `product` ordered once (202): the gateway's request id and the order's id.
    async fn order_one(&self, token: &str, product: &ProductId) -> (String, String) {
        let response = self
            .order(
                token,
                &zx_tests::unique(),
                json!({"items": [{"productId": product.as_str(), "quantity": 1}]}),
            )
            .await;
        assert_eq!(response.status(), 202);
        let request_id = response.headers()["apigw-requestid"]
            .to_str()
            .unwrap()
            .to_owned();
        let id = response.json::<Value>().await.unwrap()["orderId"]
            .as_str()
            .unwrap()
            .to_owned();
        (request_id, id)
    }

    async fn place(&self, token: &str, lines: &[(&ProductId, u32)]) -> String {
        let items: Vec<Value> = lines
            .iter()
            .map(|(id, q)| json!({"productId": id.as_str(), "quantity": q}))
            .collect();
        // As a client would: a 503 (a dependency busy or down for a moment) is retried with
        // the same key, a bounded number of times.
        let key = zx_tests::unique();
        let mut response = self.order(token, &key, json!({ "items": items })).await;
        for _ in 0..5 {
            if response.status() != StatusCode::SERVICE_UNAVAILABLE {
                break;
            }
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .unwrap_or(1)
                .min(5);
            tokio::time::sleep(Duration::from_secs(wait)).await;
            response = self.order(token, &key, json!({ "items": items })).await;
        }
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "pending");
        body["orderId"].as_str().unwrap().to_owned()
    }

    async fn get(&self, path: &str, token: &str) -> Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn cancel(&self, id: &str, token: &str) -> Response {
        self.http
            .post(format!("{}/api/v1/orders/{id}/cancel", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn set_status(&self, id: &str, token: &str, status: &str) -> Response {
        self.http
            .patch(format!("{}/api/v1/orders/{id}/status", self.base))
            .bearer_auth(token)
            .json(&json!({ "status": status }))
            .send()
            .await
            .unwrap()
    }

    async fn order_json(&self, id: &str, token: &str) -> Value {
        let response = self.get(&format!("/api/v1/orders/{id}"), token).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Polls the order until it has `status` (or fails after [`SETTLE`]).
    async fn wait_for(&self, id: &str, token: &str, status: &str) -> Value {
        let deadline = Instant::now() + SETTLE;
        loop {
            let order = self.order_json(id, token).await;
            if order["status"] == status {
                return order;
            }
            assert!(
                Instant::now() < deadline,
                "order {id} still {} (wanted {status})",
                order["status"]
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn queue_depth(&self, url: &str) -> u64 {
        zx_tests::queue_depth(&self.app.aws, url)
            .await
            .expect("queue attributes")
    }

    /// Polls until both saga queues are empty: every message handled and deleted.
    async fn drain(&self) {
        self.drain_within(SETTLE).await;
    }

    /// [`Shop::drain`], allowing `limit`.
    async fn drain_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let queues = [
            self.app.queues.inventory.clone(),
            self.app.queues.orders.clone(),
        ];
        loop {
            let mut depth = 0;
            for queue in &queues {
                depth += self.queue_depth(queue).await;
            }
            if depth == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{depth} messages still queued");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The named worker, invoked with a whole timeout ahead of it as the pollers do.
    fn worker<'a>(
        &'a self,
        name: &str,
    ) -> impl Fn(
        aws_lambda_events::sqs::SqsEvent,
    ) -> futures::future::BoxFuture<'a, aws_lambda_events::sqs::SqsBatchResponse>
    + 'a {
        let handler = self.workers.sqs_handler(name).unwrap();
        move |event| Box::pin(zx_tests::invoke_sqs(handler, event))
    }
}

fn history(order: &Value) -> Vec<(String, String)> {
    order["statusHistory"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["to"].as_str().unwrap().to_owned(),
                h["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// An `SqsEvent` of these (message id, body) records.
fn sqs_event(records: &[(&str, &str)]) -> aws_lambda_events::sqs::SqsEvent {
    let records: Vec<Value> = records
        .iter()
        .map(|(id, body)| json!({"messageId": id, "body": body, "eventSource": "aws:sqs"}))
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

fn failures(response: &aws_lambda_events::sqs::SqsBatchResponse) -> Vec<String> {
    let mut ids: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------- the cases

/// Create (202, server prices) → confirmed → stock down by exactly the quantities → history
/// has both entries; the events reach the order-events topic.
/// The trace id the gateway's line for request `request_id` names.
fn gateway_trace(lines: &[Value], request_id: &str) -> String {
    lines
        .iter()
        .find(|l| l["message"] == "gateway request" && l["request_id"] == request_id)
        .expect("the gateway logs the request")["trace_id"]
        .as_str()
        .expect("with a trace id")
        .to_owned()
}

/// Whether a log line belongs to the trace `trace_id`: its own field, or a span it is in.
fn in_trace(line: &Value, trace_id: &str) -> bool {
    line["trace_id"] == trace_id
        || line["spans"]
            .as_array()
            .is_some_and(|spans| spans.iter().any(|span| span["trace_id"] == trace_id))
}

/// Issue 18: one order's trace id, from the gateway's log line to the function's, through the
/// reserve's SQS message (its `AWSTraceHeader`, the only way a worker learns it) to the
/// inventory worker's and, through the reply, the order worker's.
async fn an_orders_trace_runs_from_the_gateway_to_the_workers(store: Store) {
    let logs = zx_tests::LogCapture::install();
    let shop = Shop::start(store).await;
    let _pollers = shop.pollers(&[]);
    let lamp = shop.product(10, 1999).await;
    let (_, token) = shop.customer().await;
    let (request_id, id) = shop.order_one(&token, &lamp).await;
    shop.wait_for(&id, &token, "confirmed").await;
    let lines = logs.lines();
    let trace_id = gateway_trace(&lines, &request_id);
    assert!(
        zx_http::trace::TraceHeader::parse(&format!("Root={trace_id}")).is_some(),
        "an X-Ray trace id: {trace_id}"
    );
    let traced: Vec<&Value> = lines.iter().filter(|l| in_trace(l, &trace_id)).collect();
    let has = |message: &str| traced.iter().any(|l| l["message"] == message);
    // The function's lines: its use case's and its one line per request.
    assert!(has("order placed"), "{traced:#?}");
    assert!(
        traced
            .iter()
            .any(|l| l["message"] == "request" && l["http.status"] == 202),
        "{traced:#?}"
    );
    // The inventory worker knew the trace only from the message it received.
    let reserved = traced
        .iter()
        .find(|l| l["message"] == "stock reserved")
        .unwrap_or_else(|| panic!("the inventory worker's line is in the trace: {traced:#?}"));
    assert_eq!(reserved["order_id"], id.as_str());
    // The order worker's, through the inventory's reply.
    assert!(
        traced.iter().any(|l| {
            l["message"] == "order status changed"
                && l["order_id"] == id.as_str()
                && l["to"] == "confirmed"
        }),
        "the order worker's line is in the trace: {traced:#?}"
    );
    // Nothing of another order's trace.
    assert!(
        lines
            .iter()
            .filter(|l| l["message"] == "order placed")
            .all(|l| in_trace(l, &trace_id)),
        "one order, one trace"
    );
}

/// Issue 18: the EMF documents emitted while an order is placed and settled (and a product
/// read twice) are valid Embedded Metric Format, name only the catalogued metrics with their
/// units, carry only bounded dimensions, and carry the invocation's request and trace ids.
async fn an_orders_metrics_are_valid_emf(store: Store) {
    let logs = zx_tests::LogCapture::install();
    let documents = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = documents.clone();
    assert!(zx_http::emf::init_to(
        "ZhixuanTest",
        Box::new(move |bytes: &[u8]| sink.lock().unwrap().extend_from_slice(bytes)),
    ));
    let shop = Shop::start(store).await;
    let lamp = shop.product(10, 1999).await;
    let (_, token) = shop.customer().await;
    // One invocation at a time, as on Lambda (the local gateway's documents carry the ids of
    // the invocation that flushed them): the requests in turn, then the workers alone.
    let path = format!("/api/v1/products/{lamp}");
    shop.get(&path, &token).await;
    shop.get(&path, &token).await;
    let (request_id, id) = shop.order_one(&token, &lamp).await;
    let trace_id = gateway_trace(&logs.lines(), &request_id);
    let _pollers = shop.pollers(&[]);
    // Each worker flushes after its batch: poll for the documents (not over HTTP, whose
    // invocations would flush too).
    let deadline = Instant::now() + SETTLE;
    let docs = loop {
        let text = String::from_utf8(documents.lock().unwrap().clone()).unwrap();
        let docs: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each document is one JSON line"))
            .collect();
        let named = |name: &str| docs.iter().any(|d| d.get(name).is_some());
        if named("OrdersConfirmed") && named("Reservations") {
            break docs;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation metrics: {docs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let bytes: usize = docs.iter().map(|d| d.to_string().len() + 1).sum();
    println!(
        "EMF: {} documents, {bytes} bytes ({} per document)",
        docs.len(),
        bytes / docs.len().max(1)
    );
    // Each dimension's closed set of values.
    let allowed = |dimension: &str, value: &str| match dimension {
        "Reason" => {
            zx_domain::metrics::CANCEL_REASONS.contains(&value)
                || ["sold_out", "open_limit"].contains(&value)
        }
        "Limit" => [
            "users", "products", "orders", "login", "login-ip", "register", "search",
        ]
        .contains(&value),
        "Function" => zx_app::functions::HTTP_FUNCTIONS
            .iter()
            .any(|f| f.name == value),
        _ => false,
    };
    let mut seen = HashMap::<String, f64>::new();
    for doc in &docs {
        let aws = &doc["_aws"];
        assert!(
            aws["Timestamp"].as_u64().unwrap() > 1_600_000_000_000,
            "{doc}"
        );
        let directives = aws["CloudWatchMetrics"].as_array().unwrap();
        assert_eq!(directives.len(), 1, "{doc}");
        let directive = &directives[0];
        assert_eq!(directive["Namespace"], "ZhixuanTest");
        let dimension_sets = directive["Dimensions"].as_array().unwrap();
        assert_eq!(dimension_sets.len(), 1, "{doc}");
        let dimensions: Vec<&str> = dimension_sets[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        // EMF: a dimension's value is a top-level string; here from a closed set.
        for dimension in &dimensions {
            let value = doc[*dimension].as_str().unwrap();
            assert!(allowed(dimension, value), "unbounded {dimension}={value}");
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap();
            let catalogued = zx_domain::metrics::metric(name)
                .unwrap_or_else(|| panic!("{name} is not a catalogued metric"));
            assert_eq!(metric["Unit"], catalogued.unit.as_str(), "{name}");
            assert!(
                dimensions.iter().all(|d| catalogued.dimensions.contains(d)),
                "{name} carries {dimensions:?}"
            );
            let value = &doc[name];
            let total = match value {
                Value::Number(n) => n.as_f64().unwrap(),
                Value::Array(values) => values.iter().map(|v| v.as_f64().unwrap()).sum(),
                other => panic!("{name} = {other}"),
            };
            *seen.entry(name.to_owned()).or_default() += total;
        }
        // Properties: the invocation's ids (never dimensions).
        assert!(
            doc["RequestId"].is_string() && doc["TraceId"].is_string(),
            "{doc}"
        );
        assert!(!dimensions.contains(&"RequestId") && !dimensions.contains(&"TraceId"));
    }
    assert_eq!(seen.get("OrdersPlaced"), Some(&1.0), "{seen:?}");
    assert_eq!(seen.get("OrdersConfirmed"), Some(&1.0), "{seen:?}");
    assert_eq!(seen.get("Reservations"), Some(&1.0), "{seen:?}");
    assert!(seen.get("CacheHits").is_some_and(|n| *n >= 1.0), "{seen:?}");
    assert!(
        seen.get("CacheMisses").is_some_and(|n| *n >= 1.0),
        "{seen:?}"
    );
    // The placement's document carries its invocation's ids.
    let placed = docs
        .iter()
        .find(|d| d.get("OrdersPlaced").is_some())
        .unwrap();
    assert_eq!(placed["RequestId"], format!("local-{request_id}"));
    assert_eq!(placed["TraceId"], trace_id.as_str());
    // The confirmation's, the trace of the message it handled.
    let confirmed = docs
        .iter()
        .find(|d| d.get("OrdersConfirmed").is_some())
        .unwrap();
    assert_eq!(confirmed["TraceId"], trace_id.as_str());
    assert!(
        confirmed["RequestId"]
            .as_str()
            .unwrap()
            .starts_with("local-")
    );
    shop.wait_for(&id, &token, "confirmed").await; // A relay run reports its lag: a histogram in milliseconds.
    documents.lock().unwrap().clear();
    shop.workers.run_relay().await;
    let text = String::from_utf8(documents.lock().unwrap().clone()).unwrap();
    let lag = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|d| d.get("RelayLag").is_some())
        .expect("the relay reports its lag");
    let directive = &lag["_aws"]["CloudWatchMetrics"][0];
    let metric = directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Name"] == "RelayLag")
        .unwrap();
    assert_eq!(metric["Unit"], "Milliseconds");
    assert!(
        lag["RelayLag"]
            .as_array()
            .is_some_and(|v| v.iter().all(Value::is_number))
    );
}

/// Issue 18: faults under load. Each scenario of the set (the short one here; `scripts/faults.sh`
/// runs the full one with `ZX_FAULT_SET=full` and writes its report) injects one fault into one
/// dependency while 16 clients browse and order, then checks the invariants and measures the
/// recovery; one line per scenario is printed (the test command shows it).
async fn fault_set(store: Store) {
    use zx_tests::faults;
    let logs = zx_tests::LogCapture::install();
    let rig = faults::Rig::start(store).await;
    let full = std::env::var("ZX_FAULT_SET").is_ok_and(|set| set == "full");
    let scenarios = if full {
        faults::full_set(store)
    } else {
        faults::short_set(store)
    };
    // `ZX_FAULT_ONLY=<text>`: only the scenarios whose name contains it (to investigate one).
    let only = std::env::var("ZX_FAULT_ONLY").unwrap_or_default();
    let mut reports = Vec::new();
    for scenario in scenarios.into_iter().filter(|s| s.name().contains(&only)) {
        let report = faults::run(&rig, scenario, 16).await;
        println!("{}", report.line());
        for violation in report.answers.violations.iter().take(10) {
            println!("[faults]   violation: {violation}");
        }
        if !report.holds() {
            // What the functions logged for their 500s.
            let mut causes: Vec<String> = logs
                .matching("ERROR", "request failed")
                .iter()
                .map(|l| {
                    l["error"]
                        .as_str()
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect()
                })
                .collect();
            causes.sort();
            causes.dedup();
            for cause in causes.iter().take(8) {
                println!("[faults]   500 cause: {cause}");
            }
        }
        reports.push(report);
    }
    if let Ok(path) = std::env::var("ZX_FAULT_REPORT") {
        let rows: String = reports.iter().map(|r| r.row() + "\n").collect();
        std::fs::write(path, rows).unwrap();
    }
    for report in &reports {
        assert!(report.holds(), "{}", report.line());
    }
}

/// Issue 18: a reserve the function could not send (SQS unreachable from it) waits in the
/// outbox with its trace header; the relay sends it in that trace, so the worker's lines still
/// carry the order's trace id.
async fn the_relay_sends_in_the_orders_trace(store: Store) {
    let logs = zx_tests::LogCapture::install();
    let mut app = TestApp::new(store).await;
    let proxy = zx_tests::FaultProxy::start(
        zx_tests::aws_endpoint()
            .trim_start_matches("http://")
            .to_owned(),
    )
    .await;
    let via = zx_tests::aws_config_for(&format!("http://{}", proxy.address)).await;
    app.services.substitutes.sender = Some(Arc::new(zx_messaging::AwsSender::new(
        aws_sdk_sqs::Client::new(&via),
        aws_sdk_sns::Client::new(&via),
        app.services.destinations.clone().unwrap(),
    )));
    let shop = Shop::on(app).await;
    let _pollers = shop.pollers(&[]);
    let lamp = shop.product(10, 1999).await;
    let (_, token) = shop.customer().await;
    proxy.set(zx_tests::Fault::Cut);
    let (request_id, id) = shop.order_one(&token, &lamp).await;
    proxy.set(zx_tests::Fault::None);
    let report = shop.workers.run_relay().await;
    assert!(report.relayed >= 1, "{report:?}");
    shop.wait_for(&id, &token, "confirmed").await;
    let lines = logs.lines();
    let trace_id = gateway_trace(&lines, &request_id);
    assert!(
        lines.iter().any(|l| l["message"] == "relayed"
            && l["order_id"] == id.as_str()
            && l["trace_id"] == trace_id.as_str()),
        "the relay sends in the order's trace"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "stock reserved"
            && l["order_id"] == id.as_str()
            && in_trace(l, &trace_id)),
        "the worker joins it through the relayed message"
    );
}

async fn happy_path(store: Store) {
    let shop = Shop::start(store).await;
    let _pollers = shop.pollers(&[]);
    let (lamp, bulb) = (shop.product(10, 1999).await, shop.product(100, 250).await);
    let (_, token) = shop.customer().await;
    // The product's view is cached before the order...
    let lamp_path = format!("/api/v1/products/{lamp}");
    shop.get(&lamp_path, &token).await;
    let cached = shop.get(&lamp_path, &token).await;
    assert_eq!(cached.headers()["x-cache"], "HIT");
    let placed_at = Instant::now();
    let response = shop
        .order(
            &token,
            "happy-1",
            json!({"items": [
                {"productId": lamp.as_str(), "quantity": 2},
                {"productId": bulb.as_str(), "quantity": 3},
                {"productId": lamp.as_str(), "quantity": 1}
            ], "shippingAddress": "1 Main St"}),
        )
        .await;
    assert_eq!(response.status(), 202);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/api/v1/orders/")
    );
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["status"], "pending");
    assert_eq!(created["totalAmount"], 3 * 1999 + 3 * 250);
    let items = created["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "lines of one product are summed");
    let lamp_line = items
        .iter()
        .find(|i| i["productId"] == lamp.as_str())
        .unwrap();
    assert_eq!(
        (
            lamp_line["unitPrice"].clone(),
            lamp_line["quantity"].clone()
        ),
        (json!(1999), json!(3))
    );
    let id = created["orderId"].as_str().unwrap();
    let confirmed = shop.wait_for(id, &token, "confirmed").await;
    assert!(
        placed_at.elapsed() < Duration::from_secs(10),
        "confirmed after {:?}",
        placed_at.elapsed()
    );
    assert_eq!(
        history(&confirmed),
        [
            ("pending".to_owned(), String::new()),
            ("confirmed".to_owned(), String::new())
        ]
    );
    assert_eq!(confirmed["statusHistory"][1]["actor"], "system");
    assert_eq!(shop.stock(&lamp).await, (7, 3));
    assert_eq!(shop.stock(&bulb).await, (97, 3));
    // ...and the reservation made it stale: the next read shows the new stock.
    let fresh = shop.get(&lamp_path, &token).await;
    assert_eq!(fresh.headers()["x-cache"], "MISS");
    assert_eq!(fresh.json::<Value>().await.unwrap()["stock"], 7);

    // Downstream consumers see order.created and order.status_changed.
    let events = zx_tests::receive_json(&shop.app.aws, &shop.app.queues.events, 2, SETTLE).await;
    let mut kinds = Vec::new();
    for event in events {
        assert_eq!(event["data"]["orderId"], id);
        assert_eq!(event["version"], 1);
        // The order's version orders its events, whatever order they arrive in.
        let expected_sequence = if event["type"] == "order.created" {
            1
        } else {
            2
        };
        assert_eq!(event["data"]["sequence"], expected_sequence, "{event}");
        kinds.push(event["type"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    assert_eq!(kinds, ["order.created", "order.status_changed"]);
}

/// 50 customers order 1 unit each of a product with 10, at once: exactly 10 confirmed, 40
/// cancelled (out_of_stock), stock 0 and never below. Three rounds.
async fn oversell(store: Store) {
    let shop = Shop::start(store).await;
    let _pollers = shop.pollers(&[]);
    let shop = Arc::new(shop);
    for round in 1..=3 {
        let started = Instant::now();
        let product = shop.product(10, 500).await;
        let orders = futures::future::join_all((0..50).map(|_| {
            let shop = shop.clone();
            let product = product.clone();
            tokio::spawn(async move {
                let (_, token) = shop.customer().await;
                let id = shop.place(&token, &[(&product, 1)]).await;
                (id, token)
            })
        }))
        .await;
        let orders: Vec<(String, String)> = orders.into_iter().map(Result::unwrap).collect();
        // Watch stock while the saga runs: it never goes below zero.
        let deadline = Instant::now() + SETTLE;
        let mut settled: HashMap<String, String> = HashMap::new();
        while settled.len() < orders.len() {
            let (available, reserved) = shop.stock(&product).await;
            assert!(
                available >= 0 && available + reserved == 10,
                "{available}/{reserved}"
            );
            for (id, token) in &orders {
                if settled.contains_key(id) {
                    continue;
                }
                let order = shop.order_json(id, token).await;
                if order["status"] != "pending" {
                    let reason = order["statusHistory"][1]["reason"]
                        .as_str()
                        .unwrap_or_default();
                    settled.insert(id.clone(), format!("{}:{reason}", order["status"]));
                }
            }
            assert!(
                settled.len() == orders.len() || Instant::now() < deadline,
                "{} of 50 settled",
                settled.len()
            );
        }
        let confirmed = settled.values().filter(|s| *s == "\"confirmed\":").count();
        let cancelled = settled
            .values()
            .filter(|s| *s == "\"cancelled\":out_of_stock")
            .count();
        assert_eq!(
            (confirmed, cancelled),
            (10, 40),
            "round {round}: {settled:?}"
        );
        shop.drain().await;
        assert_eq!(shop.stock(&product).await, (0, 10));
        println!(
            "oversell round {round} ({store:?}): 50 orders settled in {:.2} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Two lines of one product are checked against their sum; a two-product order whose second
/// product is short reserves neither.
async fn bundles_are_all_or_nothing(store: Store) {
    let shop = Shop::start(store).await;
    let _pollers = shop.pollers(&[]);
    let (_, token) = shop.customer().await;
    let scarce = shop.product(3, 100).await;
    let id = shop.place(&token, &[(&scarce, 2), (&scarce, 2)]).await;
    let order = shop.wait_for(&id, &token, "cancelled").await;
    assert_eq!(
        history(&order)[1],
        ("cancelled".into(), "out_of_stock".into())
    );
    assert_eq!(shop.stock(&scarce).await, (3, 0));

    let (plenty, short) = (shop.product(10, 100).await, shop.product(1, 100).await);
    let id = shop.place(&token, &[(&plenty, 5), (&short, 2)]).await;
    shop.wait_for(&id, &token, "cancelled").await;
    shop.drain().await;
    assert_eq!(shop.stock(&plenty).await, (10, 0));
    assert_eq!(shop.stock(&short).await, (1, 0));
}

/// The same reserve delivered twice changes stock once; the same release twice restores once.
async fn redelivery_changes_stock_once(store: Store) {
    let shop = Shop::start(store).await;
    let product = shop.product(10, 100).await;
    let (user, _) = shop.customer().await;
    let order = zx_tests::store_order(
        &shop.app.services.orders().unwrap(),
        OrderId::generate(),
        &user,
        &shop
            .app
            .services
            .products()
            .unwrap()
            .find_product(&product)
            .await
            .unwrap()
            .unwrap(),
        false,
    )
    .await;
    let reserve = zx_orders::messages::reserve(&order).body;
    let inventory = shop.worker("inventory-worker");
    let response = inventory(sqs_event(&[("m-1", &reserve), ("m-2", &reserve)])).await;
    assert!(failures(&response).is_empty());
    let response = inventory(sqs_event(&[("m-3", &reserve)])).await;
    assert!(failures(&response).is_empty());
    assert_eq!(shop.stock(&product).await, (8, 2));
    // A release is honoured only once the order is cancelled.
    let release = zx_orders::messages::release(&order.id).body;
    inventory(sqs_event(&[("m-early", &release)])).await;
    assert_eq!(
        shop.stock(&product).await,
        (8, 2),
        "a pending order keeps its stock"
    );
    let orders = shop.app.services.orders().unwrap();
    let cancelled = order
        .transitioned(
            zx_domain::OrderStatus::Cancelled,
            "system",
            Some("timeout"),
            Timestamp::now(),
        )
        .unwrap();
    orders.update_order(&order, &cancelled, &[]).await.unwrap();

    let response = inventory(sqs_event(&[("m-4", &release), ("m-5", &release)])).await;
    assert!(failures(&response).is_empty());
    inventory(sqs_event(&[("m-6", &release)])).await;
    assert_eq!(shop.stock(&product).await, (10, 0));
    // A reserve redelivered after the release takes nothing.
    inventory(sqs_event(&[("m-7", &reserve)])).await;
    assert_eq!(shop.stock(&product).await, (10, 0));
}

/// A malformed message in a batch: the good ones succeed, the worker sends the bad one to the
/// DLQ itself and reports it done (not failed), so through the queue it reaches the DLQ on its
/// first receive instead of after maxReceiveCount.
async fn poison_messages_reach_the_dead_letter_queue(store: Store) {
    let shop = Shop::start(store).await;
    let product = shop.product(10, 100).await;
    let stored = shop.stored(&product).await;
    let orders = shop.app.services.orders().unwrap();
    // Reserves of real pending orders (2 units each): only those change stock.
    let mut good = Vec::new();
    for _ in 0..3 {
        let (user, _) = shop.customer().await;
        let order =
            zx_tests::store_order(&orders, OrderId::generate(), &user, &stored, false).await;
        good.push(zx_orders::messages::reserve(&order).body);
    }
    let poison = r#"{"type":"inventory.reserve","data":"#;
    let sqs = aws_sdk_sqs::Client::new(&shop.app.aws);
    // The next message in the dead-letter queue (within `within`), with its reason.
    let dead_letter = |within: Duration| {
        let sqs = sqs.clone();
        let url = shop.app.queues.inventory_dlq.clone();
        async move {
            let deadline = Instant::now() + within;
            loop {
                let received = sqs
                    .receive_message()
                    .queue_url(&url)
                    .message_attribute_names("All")
                    .wait_time_seconds(1)
                    .send()
                    .await
                    .unwrap();
                if let Some(message) = received.messages.unwrap_or_default().into_iter().next() {
                    sqs.delete_message()
                        .queue_url(&url)
                        .receipt_handle(message.receipt_handle().unwrap())
                        .send()
                        .await
                        .unwrap();
                    let reason = message
                        .message_attributes()
                        .and_then(|a| a.get("reason"))
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_owned();
                    return (message.body().unwrap_or_default().to_owned(), reason);
                }
                assert!(Instant::now() < deadline, "nothing reached the DLQ");
            }
        }
    };
    // A message no retry can make valid is dead-lettered by the worker at once and reported
    // done; the good ones around it are reserved.
    let response = shop.worker("inventory-worker")(sqs_event(&[
        ("good-1", &good[0]),
        ("bad", poison),
        ("good-2", &good[1]),
    ]))
    .await;
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(shop.stock(&product).await, (6, 4));
    let (body, reason) = dead_letter(Duration::from_secs(5)).await;
    assert_eq!(body, poison);
    assert!(!reason.is_empty());

    // Through the queue: the poison reaches the DLQ on its first receive, not after five
    // receives 70 s apart.
    let _pollers = shop.pollers(&["inventory-worker"]);
    for body in [poison, good[2].as_str()] {
        sqs.send_message()
            .queue_url(&shop.app.queues.inventory)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }
    let (body, _) = dead_letter(Duration::from_secs(20)).await;
    assert_eq!(body, poison);
    let deadline = Instant::now() + SETTLE;
    while shop.stock(&product).await != (4, 6) {
        assert!(Instant::now() < deadline, "the good reserve was not taken");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while shop.queue_depth(&shop.app.queues.inventory).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the inventory queue never emptied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A hot SKU's sale through the queues: `orders` pending orders of one unit each for one
/// product with `stock` units (its stock in `shards` shards), their reserves sent to the
/// inventory queue all at once and taken by the pollers (10 batches at a time, as the template's
/// event source mapping). With `reshard`, the shard count changes twice while reserves flow.
/// Exactly `stock` orders are confirmed, the rest cancelled `out_of_stock`, nothing reaches a
/// dead-letter queue, and no unit is lost or made.
async fn hot_sku_sale(store: Store, shards: u16, reshard: bool) {
    const ORDERS: usize = 1_000;
    const STOCK: i64 = 300;
    let shop = Shop::start(store).await;
    let product = shop.product(STOCK, 100).await;
    zx_tests::split_stock(&shop.app, &product, shards).await;
    let products = shop.app.services.products().unwrap();
    let stored = products.find_product(&product).await.unwrap().unwrap();
    let orders = shop.app.services.orders().unwrap();
    let placed: Vec<zx_domain::Order> = futures::future::join_all((0..ORDERS / 50).map(|_| {
        let (orders, stored) = (orders.clone(), stored.clone());
        async move {
            let user = UserId::generate();
            let mut placed = Vec::new();
            for _ in 0..50 {
                placed.push(
                    zx_tests::store_order_of(
                        &orders,
                        OrderId::generate(),
                        &user,
                        &stored,
                        1,
                        false,
                    )
                    .await,
                );
            }
            placed
        }
    }))
    .await
    .into_iter()
    .flatten()
    .collect();
    let _pollers = shop.pollers(&["inventory-worker", "order-worker"]);
    let sqs = aws_sdk_sqs::Client::new(&shop.app.aws);
    let sends = placed.chunks(10).map(|chunk| {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, order)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}"))
                    .message_body(zx_orders::messages::reserve(order).body)
                    .build()
                    .unwrap()
            })
            .collect();
        let (sqs, url) = (sqs.clone(), shop.app.queues.inventory.clone());
        async move {
            let sent = sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .unwrap();
            assert!(sent.failed().is_empty());
        }
    });
    futures::future::join_all(sends).await;

    // The shard count changed while the reserves are being taken: first as soon as any unit
    // is reserved, then again past half the stock.
    let resharding = reshard.then(|| {
        let products = products.clone();
        let product = product.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for (after, shards) in [(1, 4), (STOCK / 2, 2)] {
                let deadline = Instant::now() + SETTLE;
                loop {
                    let reserved = products
                        .find_product(&product)
                        .await
                        .unwrap()
                        .unwrap()
                        .stock
                        .reserved;
                    if reserved >= after {
                        products.set_stock_shards(&product, shards).await.unwrap();
                        seen.push(reserved);
                        break;
                    }
                    assert!(Instant::now() < deadline, "no reservation was taken");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            seen
        })
    });
    let started = Instant::now();
    shop.drain_within(Duration::from_secs(180)).await;
    println!(
        "{store:?}, {shards} shard(s){}: {ORDERS} reserves of one SKU through the pollers settled in {:.1} s",
        if reshard { ", resharded twice" } else { "" },
        started.elapsed().as_secs_f64()
    );
    if let Some(resharding) = resharding {
        let seen = resharding.await.unwrap();
        assert!(
            seen[0] < STOCK,
            "the first reshard came after the sale: {seen:?}"
        );
        let records = products.stock_records(&product).await.unwrap().unwrap();
        assert_eq!(records.active, 2);
    }

    let mut confirmed = 0;
    let mut out_of_stock = 0;
    let found: Vec<_> = futures::stream::iter(placed.iter().map(|o| orders.find_order(&o.id)))
        .buffer_unordered(16)
        .collect()
        .await;
    for order in found {
        let order = order.unwrap().unwrap();
        match order.status {
            zx_domain::OrderStatus::Confirmed => confirmed += 1,
            zx_domain::OrderStatus::Cancelled => {
                assert_eq!(
                    order.history.last().and_then(|h| h.reason.as_deref()),
                    Some("out_of_stock")
                );
                out_of_stock += 1;
            }
            other => panic!("order {} is {other}", order.id),
        }
    }
    assert_eq!((confirmed, out_of_stock), (300, 700));
    assert_eq!(shop.stock(&product).await, (0, STOCK));
    for dlq in [&shop.app.queues.inventory_dlq, &shop.app.queues.orders_dlq] {
        assert_eq!(shop.queue_depth(dlq).await, 0, "{dlq}");
    }
}

async fn hot_sku_one_shard(store: Store) {
    hot_sku_sale(store, 1, false).await;
}

async fn hot_sku_four_shards(store: Store) {
    hot_sku_sale(store, 4, false).await;
}

async fn hot_sku_resharded_mid_sale(store: Store) {
    hot_sku_sale(store, 1, true).await;
}

/// An inventory store whose reservations take `lag` (a fault injector): the bulk reserve of a
/// batch cannot finish before the batch's deadline.
struct SlowReserves {
    inner: Arc<dyn zx_domain::InventoryRepository>,
    lag: Duration,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl zx_domain::InventoryRepository for SlowReserves {
    async fn reserve_batch(
        &self,
        orders: &[(OrderId, Vec<zx_domain::ReserveLine>)],
    ) -> Result<zx_domain::BatchReservation, zx_domain::RepositoryError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(self.lag).await;
        self.inner.reserve_batch(orders).await
    }

    async fn release(
        &self,
        order: &OrderId,
    ) -> Result<zx_domain::Release, zx_domain::RepositoryError> {
        self.inner.release(order).await
    }

    async fn commit(
        &self,
        order: &OrderId,
    ) -> Result<zx_domain::Commit, zx_domain::RepositoryError> {
        self.inner.commit(order).await
    }
}

/// A batch that cannot finish in the time left: the worker answers before its deadline,
/// reporting exactly the unfinished messages (three slow reserves); the releases that finished
/// are not reported, so they are not delivered again, and their stock came back once.
async fn a_slow_batch_reports_only_what_it_did_not_finish(store: Store) {
    let shop = Shop::start(store).await;
    let product = shop.product(20, 100).await;
    let stored = shop.stored(&product).await;
    let orders = shop.app.services.orders().unwrap();
    // Three orders reserved, then cancelled by their customers (their releases are due), and
    // three pending orders whose reserves are slow.
    let mut releases = Vec::new();
    for _ in 0..3 {
        let (user, token) = shop.customer().await;
        let order =
            zx_tests::store_order_of(&orders, OrderId::generate(), &user, &stored, 2, false).await;
        let reserve = zx_orders::messages::reserve(&order).body;
        let response = shop.worker("inventory-worker")(sqs_event(&[("r", &reserve)])).await;
        assert!(failures(&response).is_empty());
        assert_eq!(shop.cancel(order.id.as_str(), &token).await.status(), 200);
        releases.push(zx_orders::messages::release(&order.id).body);
    }
    assert_eq!(shop.stock(&product).await, (14, 6));
    let mut reserves = Vec::new();
    for _ in 0..3 {
        let (user, _) = shop.customer().await;
        let order =
            zx_tests::store_order_of(&orders, OrderId::generate(), &user, &stored, 1, false).await;
        reserves.push(zx_orders::messages::reserve(&order).body);
    }
    let steps =
        <zx_orders::InventorySteps as zx_app::ports::Port>::wire(&shop.app.services).unwrap();
    let slow = Arc::new(SlowReserves {
        inner: steps.inventory.clone(),
        lag: Duration::from_secs(30),
        calls: Default::default(),
    });
    let slow_steps = zx_orders::workers::Worker::Inventory(zx_orders::InventorySteps {
        inventory: slow.clone(),
        ..steps.clone()
    });
    let mut messages = Vec::new();
    for (i, body) in releases.iter().enumerate() {
        messages.push(zx_orders::workers::QueueMessage {
            id: format!("release-{i}"),
            body: body.clone(),
            trace: None,
        });
    }
    for (i, body) in reserves.iter().enumerate() {
        messages.push(zx_orders::workers::QueueMessage {
            id: format!("reserve-{i}"),
            body: body.clone(),
            trace: None,
        });
    }
    let started = Instant::now();
    let deadline = started + Duration::from_millis(2_500);
    let mut failed = zx_orders::workers::process_batch(&slow_steps, &messages, deadline).await;
    assert!(Instant::now() < deadline, "the batch overran its deadline");
    assert_eq!(slow.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    failed.sort();
    assert_eq!(failed, ["reserve-0", "reserve-1", "reserve-2"]);
    // The releases finished: their stock is back, once.
    assert_eq!(shop.stock(&product).await, (20, 0));

    // Redelivered, only the unfinished ones run again (with a store that keeps up).
    let again: Vec<_> = messages
        .into_iter()
        .filter(|m| failed.contains(&m.id))
        .collect();
    let failed = zx_orders::workers::process_batch(
        &zx_orders::workers::Worker::Inventory(steps),
        &again,
        Instant::now() + Duration::from_secs(10),
    )
    .await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(shop.stock(&product).await, (17, 3));
}

/// A sold-out product is refused at `POST /orders` (409 `out-of-stock`, naming it) without an
/// order being stored, as soon as the inventory worker found it sold out; stock coming back
/// through `PUT /stock` ends that at once, and a mark the store no longer backs lasts no longer
/// than `SOLD_OUT_TTL_SECONDS`.
async fn sold_out_products_are_refused_at_once(store: Store) {
    let shop = Shop::with(store, &[("SOLD_OUT_TTL_SECONDS", "2")]).await;
    let product = shop.product(2, 100).await;
    let _pollers = shop.pollers(&[]);
    let (_, token) = shop.customer().await;
    let first = shop.place(&token, &[(&product, 2)]).await;
    shop.wait_for(&first, &token, "confirmed").await;
    let (_, late) = shop.customer().await;
    let refused = shop
        .order(
            &late,
            &zx_tests::unique(),
            json!({"items": [{"productId": product.as_str(), "quantity": 1}]}),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "https://zhixuan.dev/problems/out-of-stock");
    assert!(
        body["detail"].as_str().unwrap().contains(product.as_str()),
        "{body}"
    );
    let listed: Value = shop
        .get("/api/v1/orders", &late)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 0, "{listed}");

    // A restock clears the mark at once.
    let response = shop
        .http
        .put(format!("{}/api/v1/stock/{product}", shop.base))
        .bearer_auth(shop.admin().await)
        .json(&json!({"delta": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let second = shop.place(&late, &[(&product, 1)]).await;
    shop.wait_for(&second, &late, "confirmed").await;

    // Sold out again; then stock comes back behind the cache's back (an operator's direct
    // write): the mark ends by its TTL.
    let (_, third) = shop.customer().await;
    let response = shop
        .order(
            &third,
            &zx_tests::unique(),
            json!({"items": [{"productId": product.as_str(), "quantity": 1}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let marked = Instant::now();
    shop.app
        .services
        .products()
        .unwrap()
        .change_stock(
            &product,
            zx_domain::StockChange::Adjust(5),
            &zx_domain::StockChangeId::generate(),
        )
        .await
        .unwrap();
    let deadline = marked + Duration::from_secs(2) + Duration::from_secs(3);
    loop {
        let response = shop
            .order(
                &third,
                &zx_tests::unique(),
                json!({"items": [{"productId": product.as_str(), "quantity": 1}]}),
            )
            .await;
        if response.status() == StatusCode::ACCEPTED {
            break;
        }
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(
            Instant::now() < deadline,
            "the sold-out mark outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What no one needs any more goes, on the relay's schedule (Postgres: bounded deletes; DynamoDB:
/// the tables' TTL, so each record carries its expiry): finished reservations past their
/// retention, idempotency keys past their expiry, stock change ids past a day. Held
/// reservations, recent ones and live keys stay.
async fn finished_records_are_purged_on_schedule(store: Store) {
    let shop = Shop::start(store).await;
    let product = shop.product(10, 100).await;
    let products = shop.app.services.products().unwrap();
    let stored = products.find_product(&product).await.unwrap().unwrap();
    let orders = shop.app.services.orders().unwrap();
    let inventory = shop.worker("inventory-worker");
    // held: reserved and pending. old, recent: reserved, cancelled, released.
    let mut placed = Vec::new();
    for cancel in [false, true, true] {
        let (user, token) = shop.customer().await;
        let order =
            zx_tests::store_order_of(&orders, OrderId::generate(), &user, &stored, 1, false).await;
        let reserve = zx_orders::messages::reserve(&order).body;
        assert!(failures(&inventory(sqs_event(&[("r", &reserve)])).await).is_empty());
        if cancel {
            assert_eq!(shop.cancel(order.id.as_str(), &token).await.status(), 200);
            let release = zx_orders::messages::release(&order.id).body;
            assert!(failures(&inventory(sqs_event(&[("l", &release)])).await).is_empty());
        }
        placed.push(order.id);
    }
    let [held, old, recent] = [&placed[0], &placed[1], &placed[2]];
    assert_eq!(shop.stock(&product).await, (9, 1));
    let (old_change, recent_change) = (
        zx_domain::StockChangeId::generate(),
        zx_domain::StockChangeId::generate(),
    );
    for change in [&old_change, &recent_change] {
        products
            .change_stock(&product, zx_domain::StockChange::Adjust(1), change)
            .await
            .unwrap();
    }

    match store {
        Store::Postgres => {
            // Aged: the old order's reservation (16 days) and key (expired), one change id
            // (2 days), and the held reservation (which must stay whatever its age).
            for (sql, id) in [
                (
                    "update {products}.reservations set updated_at = now() - interval '16 days' where order_id = '{}'",
                    old.as_str(),
                ),
                (
                    "update {products}.reservations set updated_at = now() - interval '16 days' where order_id = '{}'",
                    held.as_str(),
                ),
                (
                    "update {orders}.idempotency_keys set expires_at = now() - interval '1 minute' where order_id = '{}'",
                    old.as_str(),
                ),
                (
                    "update {products}.stock_changes set applied_at = now() - interval '2 days' where change_id = '{}'",
                    old_change.as_str(),
                ),
            ] {
                assert_eq!(shop.app.pg(&sql.replace("{}", id)).await, 1, "{sql}");
            }
            let report = shop.workers.run_relay().await;
            assert_eq!(
                (
                    report.purged_reservations,
                    report.purged_keys,
                    report.purged_stock_changes
                ),
                (1, 1, 1),
                "{report:?}"
            );
            let count = |table: &str, column: &str, id: &str| {
                format!("select count(*) from {table} where {column} = '{id}'")
            };
            for (table, column, id, left) in [
                ("{products}.reservations", "order_id", old.as_str(), 0),
                ("{products}.reservations", "order_id", held.as_str(), 1),
                ("{products}.reservations", "order_id", recent.as_str(), 1),
                ("{orders}.idempotency_keys", "order_id", old.as_str(), 0),
                ("{orders}.idempotency_keys", "order_id", recent.as_str(), 1),
                (
                    "{products}.stock_changes",
                    "change_id",
                    old_change.as_str(),
                    0,
                ),
                (
                    "{products}.stock_changes",
                    "change_id",
                    recent_change.as_str(),
                    1,
                ),
            ] {
                assert_eq!(
                    shop.app.pg(&count(table, column, id)).await,
                    left,
                    "{table} {id}"
                );
            }
            // A second run finds nothing more.
            let report = shop.workers.run_relay().await;
            assert_eq!(
                (
                    report.purged_reservations,
                    report.purged_keys,
                    report.purged_stock_changes
                ),
                (0, 0, 0)
            );
        }
        Store::DynamoDb => {
            let now = Timestamp::now().unix_seconds();
            let expiry = |item: &HashMap<String, aws_sdk_dynamodb::types::AttributeValue>| {
                item.get("expiresAt")
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse::<i64>().ok())
            };
            let retention = i64::try_from(zx_domain::RESERVATION_RETENTION.as_secs()).unwrap();
            for order in [old, recent] {
                let item = shop
                    .app
                    .dynamo_item(&format!("RESERVATION#{order}"), None)
                    .await
                    .unwrap();
                let at = expiry(&item).expect("a finished reservation expires");
                assert!((now + retention - 60..=now + retention + 60).contains(&at));
            }
            let item = shop
                .app
                .dynamo_item(&format!("RESERVATION#{held}"), None)
                .await
                .unwrap();
            assert_eq!(expiry(&item), None, "a held reservation never expires");
            let item = shop
                .app
                .dynamo_item(&format!("STOCKCHANGE#{}", old_change.as_str()), None)
                .await
                .unwrap();
            assert!(expiry(&item).is_some_and(|at| at <= now + 24 * 3600 + 60));
            // The tables expire by TTL (the template enables it on `expiresAt`).
            let template: serde_yaml::Value = serde_yaml::from_str(
                &std::fs::read_to_string(zx_tests::repo_root().join("template.yaml")).unwrap(),
            )
            .unwrap();
            for table in ["ProductsTable", "OrdersTable"] {
                let ttl = &template["Resources"][table]["Properties"]["TimeToLiveSpecification"];
                assert_eq!(ttl["AttributeName"], "expiresAt", "{table}");
                assert_eq!(ttl["Enabled"], true, "{table}");
            }
            let report = shop.workers.run_relay().await;
            assert_eq!(
                (
                    report.purged_reservations,
                    report.purged_keys,
                    report.purged_stock_changes
                ),
                (0, 0, 0)
            );
        }
    }
}

/// SQS and SNS unreachable (each behind a proxy the test cuts) for longer than the pending
/// timeout while 120 orders are placed: every order is stored (202, pending) and none is
/// cancelled for `timeout` while its reserve waits in the outbox. SQS comes back while SNS stays
/// down: the relay sends every reserve (the event rows between them do not hold them back), the
/// orders settle by stock alone (100 confirmed, 20 out of stock) and stock is conserved. Then
/// SNS comes back and the events follow.
async fn orders_survive_an_sqs_outage(store: Store) {
    // Short enough to pass during the outage; long enough for the relay run that finally sends
    // the reserves to end before the first of them is due.
    let mut app = TestApp::with(
        store,
        &zx_tests::aws_endpoint(),
        &[("ORDER_PENDING_TIMEOUT", "10")],
    )
    .await;
    let target = zx_tests::aws_endpoint()
        .trim_start_matches("http://")
        .to_owned();
    let (sqs_proxy, sns_proxy) = (
        zx_tests::CuttableProxy::start(target.clone()).await,
        zx_tests::CuttableProxy::start(target).await,
    );
    let via = |proxy: &zx_tests::CuttableProxy| format!("http://{}", proxy.address);
    let (sqs_config, sns_config) = (
        zx_tests::aws_config_for(&via(&sqs_proxy)).await,
        zx_tests::aws_config_for(&via(&sns_proxy)).await,
    );
    app.services.substitutes.sender = Some(Arc::new(zx_messaging::AwsSender::new(
        aws_sdk_sqs::Client::new(&sqs_config),
        aws_sdk_sns::Client::new(&sns_config),
        app.services.destinations.clone().unwrap(),
    )));
    let shop = Arc::new(Shop::on(app).await);
    let _pollers = shop.pollers(&[]);
    let product = shop.product(100, 100).await;

    sqs_proxy.set_cut(true);
    sns_proxy.set_cut(true);
    // 40 customers place 3 orders each (the cap on open orders is 10 a customer).
    let placed = futures::future::join_all((0..40).map(|_| {
        let shop = shop.clone();
        let product = product.clone();
        tokio::spawn(async move {
            let (_, token) = shop.customer().await;
            let mut ids = Vec::new();
            for _ in 0..3 {
                ids.push((shop.place(&token, &[(&product, 1)]).await, token.clone()));
            }
            ids
        })
    }))
    .await;
    let orders: Vec<(String, String)> = placed.into_iter().flat_map(|r| r.unwrap()).collect();
    assert_eq!(orders.len(), 120);
    assert!(sqs_proxy.refused() > 0, "the sends were attempted");
    // Longer than the pending timeout, with the relay failing to send anything. (The timeout
    // is 10 s: the relay run that sends the 120 reserves must end before the first is due, and
    // under the full suite LocalStack is slow.)
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let report = shop.workers.run_relay().await;
    assert_eq!(report.relayed, 0, "{report:?}");
    assert!(report.failed > 0 && report.outbox_left, "{report:?}");
    assert_eq!((report.expired, report.parked), (0, 0), "{report:?}");
    for (id, token) in orders.iter().step_by(10) {
        assert_eq!(shop.order_json(id, token).await["status"], "pending");
    }

    // SQS is back, SNS is not: every reserve still flows.
    sqs_proxy.set_cut(false);
    let report = shop.workers.run_relay().await;
    assert_eq!(
        report.relayed, 120,
        "every reserve, past the stuck events: {report:?}"
    );
    assert_eq!((report.expired, report.parked), (0, 0), "{report:?}");
    assert!(report.failed + report.deferred >= 120, "{report:?}");
    // 120 reserves at once, on a LocalStack the full suite shares with the hot-SKU sales: a
    // longer bound than one order's.
    let deadline = Instant::now() + 3 * SETTLE;
    let mut settled: HashMap<String, String> = HashMap::new();
    while settled.len() < orders.len() {
        for (id, token) in &orders {
            if settled.contains_key(id) {
                continue;
            }
            let order = shop.order_json(id, token).await;
            if order["status"] != "pending" {
                let reason = order["statusHistory"][1]["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                settled.insert(
                    id.clone(),
                    format!("{}:{reason}", order["status"].as_str().unwrap()),
                );
            }
        }
        assert!(
            settled.len() == orders.len() || Instant::now() < deadline,
            "{} of 120 settled",
            settled.len()
        );
    }
    let count = |what: &str| settled.values().filter(|s| *s == what).count();
    assert_eq!(
        (count("confirmed:"), count("cancelled:out_of_stock")),
        (100, 20),
        "{settled:?}"
    );
    shop.drain().await;
    assert_eq!(shop.stock(&product).await, (0, 100));

    // SNS is back: the events follow; nothing is left.
    sns_proxy.set_cut(false);
    let report = shop.workers.run_relay().await;
    assert!(report.relayed >= 120, "{report:?}");
    assert_eq!(
        (report.failed, report.parked, report.expired),
        (0, 0, 0),
        "{report:?}"
    );
    let report = shop.workers.run_relay().await;
    assert_eq!(report.relayed, 0, "{report:?}");
    assert_eq!(shop.stock(&product).await, (0, 100));
}

/// A corrupt outbox row (the oldest) and a corrupt overdue order: the relay parks both, relays
/// everything else and still expires what is due; the operator command lists the parked row and
/// puts it back.
async fn corrupt_rows_are_parked_and_everything_else_flows(store: Store) {
    let shop = Shop::with(store, &[("ORDER_PENDING_TIMEOUT", "1")]).await;
    let raw = shop.app.raw_orders();
    raw.plant_unreadable_outbox_row(Timestamp::from_unix_millis(1_000_000_000_000).unwrap())
        .await;
    let product = shop.product(10, 100).await;
    let (_, token) = shop.customer().await;
    // Due: reserved (by the pollers) but never confirmed (no order worker).
    let due = shop.place(&token, &[(&product, 1)]).await;
    let broken = shop.place(&token, &[(&product, 1)]).await;
    {
        let _inventory = shop.pollers(&["inventory-worker"]);
        let deadline = Instant::now() + SETTLE;
        while shop.stock(&product).await != (8, 2) {
            assert!(Instant::now() < deadline, "never reserved");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    raw.corrupt_order(&OrderId::parse(&broken).unwrap()).await;
    // A status change whose messages wait in the outbox (written, never sent).
    let orders = shop.app.services.orders().unwrap();
    let (user, waiting_token) = shop.customer().await;
    let stored = shop.stored(&product).await;
    let waiting = zx_tests::store_order(&orders, OrderId::generate(), &user, &stored, true).await;
    let cancelled = waiting
        .transitioned(
            zx_domain::OrderStatus::Cancelled,
            "user:x",
            Some("cancelled_by_customer"),
            Timestamp::now(),
        )
        .unwrap();
    orders
        .update_order(
            &waiting,
            &cancelled,
            &[zx_orders::messages::status_changed(
                waiting.status,
                &cancelled,
            )],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let report = shop.workers.run_relay().await;
    assert_eq!((report.parked, report.orders_parked), (1, 1), "{report:?}");
    assert!(report.relayed >= 1, "{report:?}");
    assert_eq!(report.expired, 1, "{report:?}");
    assert!(!report.outbox_left, "{report:?}");
    let order = shop.order_json(&due, &token).await;
    assert_eq!(history(&order)[1], ("cancelled".into(), "timeout".into()));
    assert_eq!(
        shop.order_json(&cancelled.id.to_string(), &waiting_token)
            .await["status"],
        "cancelled"
    );
    // The next run finds nothing: the parked rows stay out of its way.
    let report = shop.workers.run_relay().await;
    assert_eq!(
        (
            report.parked,
            report.orders_parked,
            report.relayed,
            report.expired
        ),
        (0, 0, 0, 0),
        "{report:?}"
    );
    // The operator lists the parked row, and can put it back for the next run.
    let outbox = shop.app.services.outbox().unwrap();
    let listing = zx_app::admin::parked_outbox(&*outbox).await.unwrap();
    assert!(listing.contains("unreadable"), "{listing}");
    let key = outbox.parked(10).await.unwrap()[0].key.clone();
    let resent = zx_app::admin::resend_parked(&*outbox, &key.0)
        .await
        .unwrap();
    assert!(resent.contains("back in the outbox"), "{resent}");
    let report = shop.workers.run_relay().await;
    assert_eq!(
        report.parked, 1,
        "still unreadable, parked again: {report:?}"
    );
}

/// A destination that refuses a message for good (here, an inventory queue that does not
/// exist): the relay parks the row with its reason instead of trying it every run, the other
/// destination's rows still flow, and the order whose reserve was parked does not wait for
/// ever: its clock starts when the reserve is parked, so it expires by the pending timeout.
async fn refused_rows_are_parked_and_their_orders_expire(store: Store) {
    let missing = format!(
        "{}/queue/us-east-1/000000000000/zx-missing-{}",
        zx_tests::aws_endpoint(),
        zx_tests::unique()
    );
    let shop = Shop::with(
        store,
        &[
            ("ORDER_PENDING_TIMEOUT", "1"),
            ("INVENTORY_QUEUE_URL", missing.as_str()),
        ],
    )
    .await;
    let product = shop.product(10, 100).await;
    let (_, token) = shop.customer().await;
    let id = shop.place(&token, &[(&product, 1)]).await;
    let report = shop.workers.run_relay().await;
    assert_eq!(report.parked, 1, "{report:?}");
    assert_eq!(report.expired, 0, "{report:?}");
    let outbox = shop.app.services.outbox().unwrap();
    let listing = zx_app::admin::parked_outbox(&*outbox).await.unwrap();
    assert!(listing.contains("refused by"), "{listing}");
    // Later runs do not try it again; the order expires once its clock has run.
    let deadline = Instant::now() + SETTLE;
    loop {
        let report = shop.workers.run_relay().await;
        assert_eq!(report.parked, 0, "{report:?}");
        if report.expired == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the order never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let order = shop.order_json(&id, &token).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(history(&order)[1], ("cancelled".into(), "timeout".into()));
    assert_eq!(shop.stock(&product).await, (10, 0));
}

/// A confirmed order not paid within the payment timeout is cancelled by the system
/// (`payment_timeout`), its stock released once; a paid one is untouched. A customer holds at
/// most 10 open orders: the 11th is a 409 and stores nothing.
async fn payment_deadline_and_open_order_cap(store: Store) {
    let shop = Shop::with(store, &[("ORDER_PAYMENT_TIMEOUT", "1")]).await;
    let _pollers = shop.pollers(&[]);
    let product = shop.product(50, 100).await;
    let (_, token) = shop.customer().await;
    let admin = shop.admin().await;
    let unpaid = shop.place(&token, &[(&product, 3)]).await;
    let paid = shop.place(&token, &[(&product, 2)]).await;
    shop.wait_for(&unpaid, &token, "confirmed").await;
    shop.wait_for(&paid, &token, "confirmed").await;
    assert_eq!(shop.set_status(&paid, &admin, "paid").await.status(), 200);
    assert_eq!(shop.stock(&product).await, (45, 5));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let report = shop.workers.run_relay().await;
    assert_eq!(report.payment_expired, 1, "{report:?}");
    let order = shop.order_json(&unpaid, &token).await;
    assert_eq!(
        history(&order)[2],
        ("cancelled".into(), "payment_timeout".into())
    );
    assert_eq!(order["statusHistory"][2]["actor"], "system");
    assert_eq!(shop.order_json(&paid, &token).await["status"], "paid");
    shop.drain().await;
    assert_eq!(shop.stock(&product).await, (48, 2));
    // Released once: another run, a redelivered release, change nothing.
    let report = shop.workers.run_relay().await;
    assert_eq!(report.payment_expired, 0, "{report:?}");
    let release = zx_orders::messages::release(&OrderId::parse(&unpaid).unwrap()).body;
    shop.worker("inventory-worker")(sqs_event(&[("again", &release)])).await;
    assert_eq!(shop.stock(&product).await, (48, 2));

    // The cap: 10 open orders, then 409 without an order.
    let (_, buyer) = shop.customer().await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(shop.place(&buyer, &[(&product, 1)]).await);
    }
    let response = shop
        .order(
            &buyer,
            "eleventh",
            json!({"items": [{"productId": product.as_str(), "quantity": 1}]}),
        )
        .await;
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("10 open orders"),
        "{problem}"
    );
    let listed: Value = shop
        .get("/api/v1/orders?limit=100", &buyer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 10);
    // Cancelling one frees a place.
    assert_eq!(shop.cancel(&open[0], &buyer).await.status(), 200);
    shop.place(&buyer, &[(&product, 1)]).await;
}

/// A reserve for an order that does not exist and a release for a confirmed order change no
/// stock (logged at error); shipping that order afterwards commits its units.
async fn forged_and_stray_inventory_messages_change_nothing(store: Store) {
    let logs = zx_tests::LogCapture::install();
    let shop = Shop::start(store).await;
    let _pollers = shop.pollers(&[]);
    let product = shop.product(10, 100).await;
    let (_, token) = shop.customer().await;
    let admin = shop.admin().await;
    let id = shop.place(&token, &[(&product, 4)]).await;
    shop.wait_for(&id, &token, "confirmed").await;
    shop.drain().await;
    assert_eq!(shop.stock(&product).await, (6, 4));

    let inventory = shop.worker("inventory-worker");
    let forged = zx_orders::messages::message(
        zx_domain::Destination::InventoryQueue,
        zx_orders::messages::RESERVE,
        &OrderId::generate(),
        json!({"orderId": OrderId::generate().as_str(), "items": [{"productId": product.as_str(), "quantity": 5}]}),
    )
    .body;
    let stray = zx_orders::messages::release(&OrderId::parse(&id).unwrap()).body;
    let early_commit = zx_orders::messages::commit(&OrderId::parse(&id).unwrap()).body;
    let response = inventory(sqs_event(&[
        ("forged", &forged),
        ("stray", &stray),
        ("early-commit", &early_commit),
    ]))
    .await;
    assert!(failures(&response).is_empty(), "refused, not retried");
    assert_eq!(shop.stock(&product).await, (6, 4));
    assert_eq!(
        logs.matching("ERROR", "inventory message refused").len(),
        3,
        "each refusal is logged at error"
    );

    for to in ["paid", "shipped"] {
        assert_eq!(shop.set_status(&id, &admin, to).await.status(), 200, "{to}");
    }
    shop.drain().await;
    assert_eq!(
        shop.stock(&product).await,
        (6, 0),
        "shipping committed the units"
    );
}

/// A pending order cancelled before its reserve is processed keeps stock unchanged; an
/// expired pending order is cancelled with reason timeout and its reservation released.
async fn compensation_and_expiry(store: Store) {
    let shop = Shop::with(store, &[("ORDER_PENDING_TIMEOUT", "1")]).await;
    let product = shop.product(10, 100).await;
    let (_, token) = shop.customer().await;

    // Cancelled before any worker runs.
    let early = shop.place(&token, &[(&product, 4)]).await;
    let response = shop.cancel(&early, &token).await;
    assert_eq!(response.status(), 200);
    {
        let _pollers = shop.pollers(&[]);
        shop.drain().await;
    }
    assert_eq!(shop.stock(&product).await, (10, 0));
    let order = shop.order_json(&early, &token).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(
        history(&order)[1],
        ("cancelled".into(), "cancelled_by_customer".into())
    );

    // Reserved, but the order worker never runs: the relay expires it.
    let late = shop.place(&token, &[(&product, 3)]).await;
    let inventory_only = shop.pollers(&["inventory-worker"]);
    let deadline = Instant::now() + SETTLE;
    while shop.stock(&product).await != (7, 3) {
        assert!(Instant::now() < deadline, "never reserved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let report = shop.workers.run_relay().await;
        if report.expired == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let order = shop.order_json(&late, &token).await;
    assert_eq!(order["status"], "cancelled");
    assert_eq!(history(&order)[1], ("cancelled".into(), "timeout".into()));
    assert_eq!(order["statusHistory"][1]["actor"], "system");
    // The release reaches the inventory; then the late `reserved` reaches the order worker,
    // which finds the order cancelled and leaves it so.
    let deadline = Instant::now() + SETTLE;
    while shop.stock(&product).await != (10, 0) {
        assert!(Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(inventory_only);
    let _all = shop.pollers(&[]);
    shop.drain().await;
    assert_eq!(shop.order_json(&late, &token).await["status"], "cancelled");
    assert_eq!(shop.stock(&product).await, (10, 0));
}

/// Replay → the same answer; another body → 409; ten at once with one key → one order.
async fn idempotency_keys(store: Store) {
    let shop = Arc::new(Shop::start(store).await);
    let product = shop.product(100, 100).await;
    let (_, token) = shop.customer().await;
    let body = json!({"items": [{"productId": product.as_str(), "quantity": 1}]});
    let first = shop.order(&token, "k-1", body.clone()).await;
    assert_eq!(first.status(), 202);
    let first = first.bytes().await.unwrap();
    let replay = shop.order(&token, "k-1", body.clone()).await;
    assert_eq!(replay.status(), 202);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.bytes().await.unwrap(), first);
    let other = shop
        .order(
            &token,
            "k-1",
            json!({"items": [{"productId": product.as_str(), "quantity": 2}]}),
        )
        .await;
    let problem: Value = other.json().await.unwrap();
    assert_eq!(problem["status"], 409);
    // Another customer's key of the same name is theirs.
    let (_, someone) = shop.customer().await;
    assert_eq!(
        shop.order(&someone, "k-1", body.clone()).await.status(),
        202
    );

    let (_, racer) = shop.customer().await;
    let attempts = futures::future::join_all((0..10).map(|_| {
        let shop = shop.clone();
        let racer = racer.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let response = shop.order(&racer, "race", body).await;
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["orderId"].clone()
        })
    }))
    .await;
    let ids: std::collections::HashSet<String> = attempts
        .into_iter()
        .map(|r| r.unwrap().as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    let list: Value = shop
        .get("/api/v1/orders", &racer)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

/// A customer cancel and an admin transition at once: exactly one wins, the other gets 409,
/// and stock ends consistent with the winner.
async fn racing_transitions(store: Store) {
    let shop = Arc::new(Shop::start(store).await);
    let _pollers = shop.pollers(&[]);
    let product = shop.product(10, 100).await;
    let (customer, token) = shop.customer().await;
    let admin = shop.admin().await;
    let id = shop.place(&token, &[(&product, 4)]).await;
    shop.wait_for(&id, &token, "confirmed").await;
    let (cancel, pay) = tokio::join!(
        shop.cancel(&id, &token),
        shop.set_status(&id, &admin, "paid")
    );
    let mut statuses = [cancel.status().as_u16(), pay.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    shop.drain().await;
    let order = shop.order_json(&id, &token).await;
    match order["status"].as_str().unwrap() {
        "cancelled" => assert_eq!(shop.stock(&product).await, (10, 0)),
        "paid" => assert_eq!(shop.stock(&product).await, (6, 4)),
        other => panic!("unexpected status {other}"),
    }
    assert_eq!(order["statusHistory"].as_array().unwrap().len(), 3);

    // The admin drives the rest; a refund after payment gives stock back once.
    let id = shop.place(&token, &[(&product, 1)]).await;
    shop.wait_for(&id, &token, "confirmed").await;
    let before = shop.stock(&product).await;
    for (to, expected) in [
        ("shipped", 409),
        ("paid", 200),
        ("refunded", 200),
        ("refunded", 409),
    ] {
        assert_eq!(
            shop.set_status(&id, &admin, to).await.status(),
            expected,
            "{to}"
        );
    }
    shop.drain().await;
    assert_eq!(shop.stock(&product).await, (before.0 + 1, before.1 - 1));
    // A customer may not cancel a refunded order, nor drive statuses.
    assert_eq!(shop.cancel(&id, &token).await.status(), 409);

    // Shipping takes the units out of `reserved` for good; a refund after delivery does not
    // restock.
    let id = shop.place(&token, &[(&product, 2)]).await;
    shop.wait_for(&id, &token, "confirmed").await;
    let before = shop.stock(&product).await;
    for to in ["paid", "shipped"] {
        assert_eq!(shop.set_status(&id, &admin, to).await.status(), 200, "{to}");
    }
    shop.drain().await;
    assert_eq!(shop.stock(&product).await, (before.0, before.1 - 2));
    for to in ["delivered", "refunded"] {
        assert_eq!(shop.set_status(&id, &admin, to).await.status(), 200, "{to}");
    }
    shop.drain().await;
    assert_eq!(shop.stock(&product).await, (before.0, before.1 - 2));
    let order = shop.order_json(&id, &token).await;
    let statuses: Vec<String> = history(&order).into_iter().map(|(to, _)| to).collect();
    assert_eq!(
        statuses,
        [
            "pending",
            "confirmed",
            "paid",
            "shipped",
            "delivered",
            "refunded"
        ]
    );
    // The customer sees who moved it as `admin`; admins see the user id.
    assert_eq!(order["statusHistory"][2]["actor"], "admin");
    assert_eq!(
        order["statusHistory"][0]["actor"],
        format!("user:{customer}")
    );
    assert_eq!(order["statusHistory"][1]["actor"], "system");
    let seen_by_admin = shop.order_json(&id, &admin).await;
    assert!(
        seen_by_admin["statusHistory"][2]["actor"]
            .as_str()
            .unwrap()
            .starts_with("user:")
    );
}

/// Another customer's order is not found (get, cancel); customers may not set statuses;
/// listings show customers only their own orders; bad input is a 400 that names the field.
async fn ownership_and_bad_input(store: Store) {
    let shop = Shop::start(store).await;
    let product = shop.product(10, 100).await;
    let (alice_id, alice) = shop.customer().await;
    let (_, mallory) = shop.customer().await;
    let id = shop.place(&alice, &[(&product, 1)]).await;
    assert_eq!(
        shop.get(&format!("/api/v1/orders/{id}"), &mallory)
            .await
            .status(),
        404
    );
    assert_eq!(shop.cancel(&id, &mallory).await.status(), 404);
    assert_eq!(shop.set_status(&id, &alice, "paid").await.status(), 403);
    assert_eq!(
        shop.get(&format!("/api/v1/orders/{id}"), &shop.admin().await)
            .await
            .status(),
        200
    );
    let listed: Value = shop
        .get(&format!("/api/v1/orders?userId={alice_id}"), &mallory)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
    let listed: Value = shop
        .get(
            &format!("/api/v1/orders?userId={alice_id}"),
            &shop.admin().await,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["orderId"], id.as_str());
    let listed: Value = shop
        .get("/api/v1/orders?status=pending", &shop.admin().await)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    // No token at all.
    let response = shop
        .http
        .get(format!("{}/api/v1/orders", shop.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let p = product.as_str();
    let ghost = ProductId::generate();
    let cases = [
        (
            json!({"items": [{"productId": p, "quantity": 1, "price": 1}]}),
            "price",
        ),
        (
            json!({"items": [{"productId": p, "quantity": 1}], "totalAmount": 1}),
            "totalAmount",
        ),
        (
            json!({"items": [{"productId": p, "quantity": 1}], "status": "paid"}),
            "status",
        ),
        (
            json!({"items": [{"productId": p, "quantity": 1}], "userId": alice_id.as_str()}),
            "userId",
        ),
        (
            json!({"items": [{"productId": p, "quantity": 0}]}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"productId": p, "quantity": 101}]}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"productId": p, "quantity": -1}]}),
            "items[0].quantity",
        ),
        (
            json!({"items": [{"productId": p, "quantity": 1e30}]}),
            "quantity",
        ),
        (
            json!({"items": [{"productId": "nope", "quantity": 1}]}),
            "items[0].productId",
        ),
        (json!({"items": []}), "items"),
        (
            json!({"items": vec![json!({"productId": p, "quantity": 1}); 51]}),
            "items",
        ),
        (
            json!({"items": [{"productId": ghost.as_str(), "quantity": 1}]}),
            ghost.as_str(),
        ),
        (
            json!({"items": [{"productId": p, "quantity": 1}], "shippingAddress": ""}),
            "shippingAddress",
        ),
        (json!([1, 2]), "JSON object"),
    ];
    for (body, named) in cases {
        let response = shop.order(&alice, &zx_tests::unique(), body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let text = response.text().await.unwrap();
        assert!(text.contains(named), "{body}: {text}");
    }
    let response = shop
        .http
        .post(format!("{}/api/v1/orders", shop.base))
        .bearer_auth(&alice)
        .json(&json!({"items": [{"productId": p, "quantity": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "no Idempotency-Key");
    assert!(response.text().await.unwrap().contains("Idempotency-Key"));
    for query in [
        "cursor=%C3%A9",
        "cursor=1.x",
        "limit=0",
        "status=lost",
        "userId=me",
    ] {
        let response = shop.get(&format!("/api/v1/orders?{query}"), &alice).await;
        assert_eq!(response.status(), 400, "{query}");
    }
    for path in ["/api/v1/orders/not-an-id", "/api/v1/orders/%00"] {
        assert_eq!(shop.get(path, &alice).await.status(), 404, "{path}");
    }
    let response = shop
        .set_status(&id, &shop.admin().await, "teleported")
        .await;
    assert_eq!(response.status(), 400);
}

/// Customers page through their own orders newest first.
async fn customers_page_through_their_orders(store: Store) {
    let shop = Shop::start(store).await;
    let product = shop.product(100, 100).await;
    let (_, token) = shop.customer().await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(shop.place(&token, &[(&product, 1)]).await);
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/orders?limit=2".to_owned();
    loop {
        let page: Value = shop.get(&path, &token).await.json().await.unwrap();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["orderId"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/orders?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    placed.reverse();
    assert_eq!(seen, placed);
}

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(zx_tests::Store::DynamoDb).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(zx_tests::Store::Postgres).await;
                }
            )*
        }
    };
}

both_backends!(
    fault_set,
    happy_path,
    an_orders_trace_runs_from_the_gateway_to_the_workers,
    an_orders_metrics_are_valid_emf,
    the_relay_sends_in_the_orders_trace,
    hot_sku_one_shard,
    hot_sku_four_shards,
    hot_sku_resharded_mid_sale,
    a_slow_batch_reports_only_what_it_did_not_finish,
    sold_out_products_are_refused_at_once,
    finished_records_are_purged_on_schedule,
    refused_rows_are_parked_and_their_orders_expire,
    corrupt_rows_are_parked_and_everything_else_flows,
    payment_deadline_and_open_order_cap,
    forged_and_stray_inventory_messages_change_nothing,
    oversell,
    bundles_are_all_or_nothing,
    redelivery_changes_stock_once,
    poison_messages_reach_the_dead_letter_queue,
    orders_survive_an_sqs_outage,
    compensation_and_expiry,
    idempotency_keys,
    racing_transitions,
    ownership_and_bad_input,
    customers_page_through_their_orders,
);

/// The workers' and the relay's sample events run through their handlers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_sample_events_run_through_their_handlers() {
    let shop = Shop::start(Store::DynamoDb).await;
    let read = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(zx_tests::repo_root().join(format!("events/{name}.json")))
                .unwrap(),
        )
        .unwrap()
    };
    for name in ["inventory-worker", "order-worker"] {
        let event: aws_lambda_events::sqs::SqsEvent = serde_json::from_value(read(name)).unwrap();
        assert_eq!(event.records.len(), 1);
        // The sample names a product and an order this store lacks: the reserve is rejected
        // (and answered), the reservation for an unknown order fails and is left for redelivery.
        let response = shop.worker(name)(event).await;
        let expected: Vec<String> = if name == "order-worker" {
            vec!["059f36b4-87a3-44ab-83d2-661975830a7d".into()]
        } else {
            vec![]
        };
        assert_eq!(failures(&response), expected, "{name}");
    }
    // The relay's event is what EventBridge sends; the relay reads nothing from it.
    let scheduled = read("outbox-relay");
    assert_eq!(scheduled["detail-type"], "Scheduled Event");
    assert_eq!(scheduled["source"], "aws.events");
    let report = shop.workers.run_relay().await;
    assert_eq!(report.expired, 0);
}
