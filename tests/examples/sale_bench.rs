//! A sale through the local gateway, on each backend (docs/benchmarks.md): `BUYERS` customers
//! (each with their own token and source address) race for `UNITS` units of one product, 50
//! `POST /orders` at a time, with the workers fed by the local event source mappings. Reports
//! how many orders were accepted (202) and how many refused at once as sold out (409
//! `out-of-stock`), and the time from the first request until every accepted order settled
//! (confirmed or cancelled `out_of_stock`), with the stock at the end.
//!
//!   eval "$(scripts/stack.sh env)"
//!   cargo run --profile measure -p zx-tests --example sale_bench [BUYERS] [UNITS]

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use zx_domain::Role;
use zx_tests::{Store, TestApp};

const AT_ONCE: usize = 50;

async fn sale(store: Store, buyers: usize, units: i64) {
    let app = TestApp::new(store).await;
    let base = app.gateway().await;
    let workers = app.workers();
    let _pollers = app.start_pollers(&workers, &[]);
    let products = app.services.products().expect("products");
    let product = zx_tests::sample_product("Sale", "the sale item", "sale", 100, units);
    products.create_product(&product).await.expect("product");
    // Stored customers with sessions (placing an order checks both), made before the clock.
    let mut tokens = Vec::with_capacity(buyers);
    for _ in 0..buyers {
        tokens.push(app.stored_user_token(Role::Customer).await.1);
    }
    let http = reqwest::Client::new();
    let started = Instant::now();
    let answers: Vec<(u16, Option<(String, String)>)> =
        futures::stream::iter(tokens.into_iter().enumerate().map(|(i, token)| {
            let (http, base, product) = (http.clone(), base.clone(), product.id.clone());
            async move {
                let response = http
                    .post(format!("{base}/api/v1/orders"))
                    .bearer_auth(&token)
                    .header("idempotency-key", format!("sale-{i}"))
                    .header("x-forwarded-for", format!("10.{}.{}.7", i / 250, i % 250))
                    .json(&json!({"items": [{"productId": product.as_str(), "quantity": 1}]}))
                    .send()
                    .await
                    .expect("post");
                let status = response.status().as_u16();
                let body: Value = response.json().await.expect("json");
                let placed = body["orderId"].as_str().map(|id| (id.to_owned(), token));
                (status, placed)
            }
        }))
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;
    let posted_in = started.elapsed().as_secs_f64();
    let accepted: Vec<(String, String)> = answers.iter().filter_map(|(_, p)| p.clone()).collect();
    let sold_out = answers.iter().filter(|(s, _)| *s == 409).count();
    let other = answers.len() - accepted.len() - sold_out;
    // Every accepted order settled: polled until none is pending.
    let mut confirmed = 0;
    let mut cancelled = 0;
    for (id, token) in &accepted {
        loop {
            let order: Value = http
                .get(format!("{base}/api/v1/orders/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            match order["status"].as_str() {
                Some("confirmed") => confirmed += 1,
                Some("cancelled") => cancelled += 1,
                _ => {
                    assert!(
                        started.elapsed() < Duration::from_secs(300),
                        "stuck: {order}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
            break;
        }
    }
    let settled_in = started.elapsed().as_secs_f64();
    let after = products
        .find_product(&product.id)
        .await
        .expect("read")
        .expect("product");
    println!(
        "{store:?}: {buyers} buyers for {units} units: {} accepted (202), {sold_out} refused at POST /orders as sold out (409), {other} other; all {buyers} answered in {posted_in:.1} s; every order settled in {settled_in:.1} s ({confirmed} confirmed, {cancelled} cancelled out_of_stock); stock available {}, reserved {}",
        accepted.len(),
        after.stock.available,
        after.stock.reserved
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let buyers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let units: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    for store in [Store::DynamoDb, Store::Postgres] {
        sale(store, buyers, units).await;
    }
}
