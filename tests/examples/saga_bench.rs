//! Measures the orders saga on each backend (see docs/benchmarks.md):
//! - create → confirmed: `POST /orders` through the local gateway, then `GET /orders/{id}`
//!   polled every 2 ms until `confirmed`, with the workers fed by the local event source
//!   mappings from LocalStack's queues (batch size and window from template.yaml);
//!
//! The inventory worker's reservations per second are measured by `hot_sku_bench`.
//!
//!   eval "$(scripts/stack.sh env)"
//!   cargo run --profile measure -p zx-tests --example saga_bench [orders]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zx_domain::Role;
use zx_tests::{Store, TestApp};

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
        &[
            ("RATE_LIMIT_ORDERS", "100000"),
            ("ORDER_MAX_OPEN", "100000"),
        ],
    )
    .await;
    let base = app.gateway().await;
    let workers = app.workers();
    let _pollers = app.start_pollers(&workers, &[]);
    let product = zx_tests::sample_product("Bench", "bench item", "bench", 100, 1_000_000);
    app.services
        .products()
        .unwrap()
        .create_product(&product)
        .await
        .expect("product");
    // A stored customer with a session: placing an order checks both.
    let (_, token) = app.stored_user_token(Role::Customer).await;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let orders: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    for store in [Store::DynamoDb, Store::Postgres] {
        create_to_confirmed(store, orders).await;
    }
}
