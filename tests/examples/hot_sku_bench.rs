//! Reservations per second on **one** product (a hot SKU), on each backend (docs/benchmarks.md):
//! `RESERVATIONS` pending orders of one unit each (stored first), their `inventory.reserve`
//! messages handed to the inventory worker's handler in batches of 10 (the template's batch
//! size), 10 batches at a time (as concurrent Lambda instances would), with stock for all of
//! them; then again with the product's stock split into 8 shards (when the build supports it).
//!
//!   eval "$(scripts/stack.sh env)"
//!   cargo run --profile measure -p zx-tests --example hot_sku_bench [RESERVATIONS] [SHARDS...]

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};
use zx_domain::{OrderId, UserId};
use zx_tests::{Store, TestApp};

const BATCH: usize = 10;
/// Batches at a time (`HOT_SKU_CONCURRENT` overrides it, to see contention apart from latency).
fn concurrent() -> usize {
    std::env::var("HOT_SKU_CONCURRENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

async fn run(store: Store, reservations: usize, shards: u16) {
    let app = TestApp::with(
        store,
        &zx_tests::aws_endpoint(),
        &[("ORDER_MAX_OPEN", "1000")],
    )
    .await;
    let workers = Arc::new(app.workers());
    let products = app.services.products().expect("products");
    let product = zx_tests::sample_product("Hot", "hot item", "bench", 100, 1_000_000);
    products.create_product(&product).await.expect("product");
    zx_tests::split_stock(&app, &product.id, shards).await;
    let orders = app.services.orders().expect("orders");
    let stored = products
        .find_product(&product.id)
        .await
        .expect("read")
        .expect("product");
    let created = Instant::now();
    let mut bodies = Vec::with_capacity(reservations);
    let chunks: Vec<Vec<String>> = futures::future::join_all((0..reservations / 50).map(|_| {
        let (orders, stored) = (orders.clone(), stored.clone());
        async move {
            let mut bodies = Vec::new();
            let user = UserId::generate();
            for _ in 0..50 {
                let order = zx_tests::store_order_of(
                    &orders,
                    OrderId::generate(),
                    &user,
                    &stored,
                    1,
                    false,
                )
                .await;
                bodies.push(zx_orders::messages::reserve(&order).body);
            }
            bodies
        }
    }))
    .await;
    for chunk in chunks {
        bodies.extend(chunk);
    }
    let stored_in = created.elapsed().as_secs_f64();
    let batches: Vec<Vec<String>> = bodies.chunks(BATCH).map(<[String]>::to_vec).collect();
    let started = Instant::now();
    let queue = Arc::new(tokio::sync::Mutex::new(batches.into_iter()));
    let runners = (0..concurrent()).map(|_| {
        let (queue, workers) = (queue.clone(), workers.clone());
        tokio::spawn(async move {
            let handler = workers
                .sqs_handler("inventory-worker")
                .expect("worker")
                .clone();
            let mut failed = 0;
            loop {
                let Some(batch) = queue.lock().await.next() else {
                    return failed;
                };
                let records: Vec<Value> = batch
                    .iter()
                    .enumerate()
                    .map(|(i, body)| json!({"messageId": format!("m{i}"), "body": body}))
                    .collect();
                let event = serde_json::from_value(json!({ "Records": records })).expect("event");
                let response = zx_tests::invoke_sqs(&handler, event).await;
                failed += response.batch_item_failures.len();
            }
        })
    });
    let failed: usize = futures::future::join_all(runners)
        .await
        .into_iter()
        .map(|r| r.expect("runner"))
        .sum();
    let elapsed = started.elapsed().as_secs_f64();
    let after = products
        .find_product(&product.id)
        .await
        .expect("read")
        .expect("product");
    println!(
        "{store:?}, {shards} shard(s): {reservations} reservations of one product in batches of {BATCH}, {} batches at a time: {:.0} reservations/s ({elapsed:.2} s; {failed} left for redelivery; reserved {}; orders stored in {stored_in:.1} s)",
        concurrent(),
        reservations as f64 / elapsed,
        after.stock.reserved
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    // `HOT_SKU_TRACE=1` prints every span's time as it closes (where a batch's time goes).
    if std::env::var_os("HOT_SKU_TRACE").is_some() {
        tracing_subscriber::fmt()
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .init();
    }
    let mut args = std::env::args().skip(1);
    let reservations: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let shards: Vec<u16> = args.filter_map(|a| a.parse().ok()).collect();
    let shards = if shards.is_empty() {
        vec![1, 8]
    } else {
        shards
    };
    // `HOT_SKU_STORE=dynamodb` or `postgres` measures one backend.
    let only = std::env::var("HOT_SKU_STORE").unwrap_or_default();
    for store in [Store::DynamoDb, Store::Postgres] {
        if !only.is_empty() && !format!("{store:?}").eq_ignore_ascii_case(&only) {
            continue;
        }
        for &n in &shards {
            run(store, reservations, n).await;
        }
    }
}
