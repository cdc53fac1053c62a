//! `zx-load`: a load curve through the local gateway (`scripts/load-report.py` runs it).
//!
//! ```text
//! zx-load --base http://127.0.0.1:3000 --steps 1,2,4,...,256 --seconds 10 --admin-token T
//! ```
//!
//! Closed-loop virtual clients, each from its own loopback source address (127.1.x.y), each a
//! registered customer: for every step, that many clients send requests back to back for the
//! step's duration with the mix 80 % browsing (listings), 10 % product reads, 5 % logins, 5 %
//! orders (`Idempotency-Key`, one unit of a random product). Prints one JSON object per step:
//! per class, answers by status and latency percentiles, and the throughput. Sends only to the
//! loopback address it is given; bounded by its steps' durations.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method};
use serde_json::{Value, json};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Browse,
    Product,
    Login,
    Order,
}

impl Class {
    fn name(self) -> &'static str {
        match self {
            Self::Browse => "browse",
            Self::Product => "product",
            Self::Login => "login",
            Self::Order => "order",
        }
    }

    /// The mix: 80 / 10 / 5 / 5 out of 100.
    fn pick(n: u64) -> Self {
        match n % 100 {
            0..=79 => Self::Browse,
            80..=89 => Self::Product,
            90..=94 => Self::Login,
            _ => Self::Order,
        }
    }
}

#[derive(Default)]
struct Seen {
    latencies_us: BTreeMap<Class, Vec<u64>>,
    statuses: BTreeMap<(Class, u16), u64>,
}

struct Customer {
    source: IpAddr,
    email: String,
    token: String,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn client(source: IpAddr) -> Client {
    Client::builder()
        .local_address(source)
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(4)
        .build()
        .unwrap_or_default()
}

/// A next pseudo-random number (xorshift; the mix needs no better).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn register(base: &str, n: usize, tag: &str) -> Option<Customer> {
    let source = IpAddr::V4(Ipv4Addr::new(
        127,
        1,
        u8::try_from(n / 250).ok()?,
        u8::try_from(n % 250 + 2).ok()?,
    ));
    let http = client(source);
    let email = format!("load{tag}{n}@example.com");
    let body =
        json!({"username": format!("load{tag}{n}"), "email": email, "password": "password-123"});
    for _ in 0..20 {
        let response = http
            .post(format!("{base}/api/v1/users/register"))
            .json(&body)
            .send()
            .await
            .ok()?;
        if response.status().as_u16() != 503 && response.status().as_u16() != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let login = json!({"email": email, "password": "password-123"});
    let response = http
        .post(format!("{base}/api/v1/users/login"))
        .json(&login)
        .send()
        .await
        .ok()?;
    let token = response.json::<Value>().await.ok()?["token"]
        .as_str()?
        .to_owned();
    Some(Customer {
        source,
        email,
        token,
    })
}

async fn run_client(
    base: String,
    customer: Arc<Customer>,
    products: Arc<Vec<String>>,
    until: Instant,
    seen: Arc<Mutex<Seen>>,
    seed: u64,
) {
    let http = client(customer.source);
    let mut state = seed | 1;
    let mut local = Seen::default();
    while Instant::now() < until {
        let class = Class::pick(next(&mut state));
        let product = &products[usize::try_from(next(&mut state)).unwrap_or(0) % products.len()];
        let (method, path, body, key) = match class {
            Class::Browse => {
                let page = next(&mut state) % 3;
                let path = if page == 0 {
                    "/api/v1/products?limit=20".to_owned()
                } else {
                    format!("/api/v1/products?limit=20&page={}", page + 1)
                };
                (Method::GET, path, None, None)
            }
            Class::Product => (
                Method::GET,
                format!("/api/v1/products/{product}"),
                None,
                None,
            ),
            Class::Login => (
                Method::POST,
                "/api/v1/users/login".to_owned(),
                Some(json!({"email": customer.email, "password": "password-123"})),
                None,
            ),
            Class::Order => (
                Method::POST,
                "/api/v1/orders".to_owned(),
                Some(json!({"items": [{"productId": product, "quantity": 1}]})),
                Some(uuid::Uuid::new_v4().to_string()),
            ),
        };
        let mut request = http.request(method, format!("{base}{path}"));
        if class == Class::Order {
            request = request.bearer_auth(&customer.token);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let status = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                status
            }
            Err(_) => 0,
        };
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        local.latencies_us.entry(class).or_default().push(took);
        *local.statuses.entry((class, status)).or_default() += 1;
    }
    if let Ok(mut seen) = seen.lock() {
        for (class, mut latencies) in local.latencies_us {
            seen.latencies_us
                .entry(class)
                .or_default()
                .append(&mut latencies);
        }
        for (key, count) in local.statuses {
            *seen.statuses.entry(key).or_default() += count;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let base = arg(&args, "--base").unwrap_or_else(|| "http://127.0.0.1:3000".to_owned());
    // Only `http://<IPv4 loopback>[:port][/...]`: no host names, no user info.
    let authority = base
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    let host = authority.split(':').next().unwrap_or_default();
    if authority.contains('@') || !host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback()) {
        return Err("zx-load sends to a loopback address (127.0.0.0/8) only".into());
    }
    let steps: Vec<usize> = arg(&args, "--steps")
        .unwrap_or_else(|| "1,2,4,8,16,32,64,128,256".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let seconds: u64 = arg(&args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
        .min(120);
    let most = steps.iter().copied().max().unwrap_or(1).min(1000);
    let listing: Value = Client::new()
        .get(format!("{base}/api/v1/products?limit=100"))
        .send()
        .await?
        .json()
        .await?;
    let products: Vec<String> = listing["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|p| p["productId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if products.is_empty() {
        return Err("no products to read (seed the catalogue first)".into());
    }
    let products = Arc::new(products);
    let tag: String = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
    let started = Instant::now();
    let mut customers = Vec::new();
    let registered = futures_join(most, &base, &tag).await;
    for customer in registered.into_iter().flatten() {
        customers.push(Arc::new(customer));
    }
    eprintln!(
        "[load] {} customers registered in {:.1} s",
        customers.len(),
        started.elapsed().as_secs_f64()
    );
    if customers.is_empty() {
        return Err("no customer could register".into());
    }
    // The steps start now (what samples resources per step takes its baseline here).
    println!("{}", json!({ "ready": customers.len() }));
    for &clients in &steps {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let until = Instant::now() + Duration::from_secs(seconds);
        let began = Instant::now();
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                tokio::spawn(run_client(
                    base.clone(),
                    customers[i % customers.len()].clone(),
                    products.clone(),
                    until,
                    seen.clone(),
                    (i as u64 + 1) * 0x9E37_79B9_7F4A_7C15,
                ))
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        let elapsed = began.elapsed().as_secs_f64();
        let seen = std::mem::take(&mut *seen.lock().map_err(|_| "poisoned")?);
        let mut classes = serde_json::Map::new();
        let mut total = 0u64;
        for (class, mut latencies) in seen.latencies_us {
            latencies.sort_unstable();
            total += latencies.len() as u64;
            let statuses: serde_json::Map<String, Value> = seen
                .statuses
                .iter()
                .filter(|((c, _), _)| *c == class)
                .map(|((_, status), count)| (status.to_string(), json!(count)))
                .collect();
            classes.insert(
                class.name().to_owned(),
                json!({
                    "count": latencies.len(),
                    "per_second": latencies.len() as f64 / elapsed,
                    "p50_ms": percentile(&latencies, 50.0),
                    "p90_ms": percentile(&latencies, 90.0),
                    "p99_ms": percentile(&latencies, 99.0),
                    "statuses": statuses,
                }),
            );
        }
        println!(
            "{}",
            json!({
                "clients": clients,
                "seconds": elapsed,
                "requests": total,
                "per_second": total as f64 / elapsed,
                "classes": classes,
            })
        );
        eprintln!(
            "[load] {clients} clients: {:.0} requests/s",
            total as f64 / elapsed
        );
        // Let queues and the relay settle between steps.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}

/// Registers `n` customers, 16 at a time.
async fn futures_join(n: usize, base: &str, tag: &str) -> Vec<Option<Customer>> {
    let mut out = Vec::with_capacity(n);
    let mut next_index = 0;
    while next_index < n {
        let batch: Vec<_> = (next_index..(next_index + 16).min(n))
            .map(|i| {
                let base = base.to_owned();
                let tag = tag.to_owned();
                tokio::spawn(async move { register(&base, i, &tag).await })
            })
            .collect();
        next_index += batch.len();
        for task in batch {
            out.push(task.await.ok().flatten());
        }
    }
    out
}
