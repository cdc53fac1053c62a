//! Measures the orders saga on each backend (see docs/benchmarks.md):
//! - create → confirmed: `POST /orders` through the local gateway, then `GET /orders/{id}`
//!   polled every 2 ms until `confirmed`, with the workers fed by the local event source
//!   mappings from LocalStack's queues (batch size and window from template.yaml);
//! - the inventory worker's reservations per second: its handler invoked with batches of the
//!   template's batch size (10) of `inventory.reserve` messages, one product per order spread
//!   over 50 products, `CONCURRENT` batches at a time (as several pollers would).
//!
//!   eval "$(scripts/stack.sh env)"
//!   cargo run --profile measure -p zx-tests --example saga_bench [orders] [reservations]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zx_auth::TokenIssuer;
use zx_domain::{Email, OrderId, Role, Timestamp, UserId};
use zx_tests::{Store, TestApp};

const BATCH: usize = 10;
const CONCURRENT: usize = 3;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn create_to_confirmed(store: Store, orders: usize) {
    // One client polls far faster than the per-client orders limit (500/min) allows.
    let app = TestApp::with(
        store,
        &zx_tests::aws_endpoint(),
        &[("RATE_LIMIT_ORDERS", "100000")],
    )
    .await;
    let base = app.gateway().await;
    let workers = app.workers();
    let _pollers = app.start_pollers(&workers, &[]);
    let product = zx_tests::sample_product("Bench", "bench item", "bench", 100, 1_000_000);
    app.services
        .stores
        .products()
        .unwrap()
        .create_product(&product)
        .await
        .expect("product");
    let issuer = TokenIssuer::new(zx_tests::signing_key(), app.config.token.clone());
    let user = UserId::generate();
    let token = issuer
        .issue_at(
            &user,
            &Email::parse("bench@example.com").expect("email"),
            Role::Customer,
            Timestamp::now().unix_seconds(),
        )
        .expect("token")
        .token;
    let http = reqwest::Client::new();
    let mut samples = Vec::with_capacity(orders);
    for i in 0..orders {
        let started = Instant::now();
        let created: Value = http
            .post(format!("{base}/api/v1/orders"))
            .bearer_auth(&token)
            .header("idempotency-key", format!("bench-{i}"))
            .json(&json!({"items": [{"productId": product.id.as_str(), "quantity": 1}]}))
            .send()
            .await
            .expect("post")
            .json()
            .await
            .expect("json");
        let id = created["orderId"].as_str().expect("order id").to_owned();
        loop {
            let order: Value = http
                .get(format!("{base}/api/v1/orders/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            if order["status"] == "confirmed" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "stuck: {order}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{store:?}: create → confirmed over {orders} orders: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default()
    );
}

async fn reservations_per_second(store: Store, reservations: usize) {
    let app = TestApp::new(store).await;
    let workers = Arc::new(app.workers());
    let mut products = Vec::new();
    for i in 0..50 {
        let product =
            zx_tests::sample_product(&format!("Bench {i}"), "bench item", "bench", 100, 1_000_000);
        app.services
            .stores
            .products()
            .unwrap()
            .create_product(&product)
            .await
            .expect("product");
        products.push(product.id);
    }
    let bodies: Vec<String> = (0..reservations)
        .map(|i| {
            let order = OrderId::generate();
            zx_orders::messages::message(
                zx_domain::Destination::InventoryQueue,
                zx_orders::messages::RESERVE,
                &order,
                json!({"orderId": order.as_str(), "items": [{"productId": products[i % products.len()].as_str(), "quantity": 1}]}),
            )
            .body
        })
        .collect();
    let batches: Vec<Vec<String>> = bodies.chunks(BATCH).map(<[String]>::to_vec).collect();
    let started = Instant::now();
    let queue = Arc::new(tokio::sync::Mutex::new(batches.into_iter()));
    let runners = (0..CONCURRENT).map(|_| {
        let (queue, workers) = (queue.clone(), workers.clone());
        tokio::spawn(async move {
            let handler = workers
                .sqs_handler("inventory-worker")
                .expect("worker")
                .clone();
            loop {
                let Some(batch) = queue.lock().await.next() else {
                    return;
                };
                let records: Vec<Value> = batch
                    .iter()
                    .enumerate()
                    .map(|(i, body)| json!({"messageId": format!("m{i}"), "body": body}))
                    .collect();
                let event = serde_json::from_value(json!({ "Records": records })).expect("event");
                let response = handler(event).await;
                assert!(
                    response.batch_item_failures.is_empty(),
                    "a reservation failed"
                );
            }
        })
    });
    futures::future::join_all(runners).await;
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "{store:?}: {reservations} reservations in batches of {BATCH}, {CONCURRENT} batches at a time: {:.0} reservations/s ({elapsed:.2} s)",
        reservations as f64 / elapsed
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let orders: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let reservations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    for store in [Store::DynamoDb, Store::Postgres] {
        create_to_confirmed(store, orders).await;
        reservations_per_second(store, reservations).await;
    }
}
