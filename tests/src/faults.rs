//! The fault harness: a shop whose dependencies (LocalStack, the cache, Postgres) are each
//! behind a [`FaultProxy`], a mixed-load driver of virtual clients (each from its own loopback
//! source address) that browse, register, log in, order with `Idempotency-Key`s, cancel, and an
//! admin who pays and ships, retrying 503 and 429 as a real client would (same key, after
//! `Retry-After`); and scenarios that inject one fault under that load and then check the
//! invariants: every accepted order settles, stock is conserved, no key gives two orders, no
//! reservation counts twice, clients saw only correct answers, 429s or 503s with `Retry-After`
//! (never a 500, a dropped connection or a hang past the function timeout), and how long
//! recovery took. Everything goes to loopback only, bounded in requests and time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use zx_domain::{OrderId, OrderStatus, ProductId, Role};

use crate::{Fault, FaultProxy, Store, TestApp};

/// The function timeout of `template.yaml`: no answer may take longer (plus a margin for the
/// local gateway and the client).
pub const FUNCTION_TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(12);
/// How long after a fault ends every accepted order must have settled and the queues drained.
pub const SETTLE_BOUND: Duration = Duration::from_secs(45);

/// A dependency a fault is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dependency {
    /// LocalStack: SQS, SNS and (on that backend) DynamoDB.
    Aws,
    /// The Redis-protocol cache.
    Cache,
    /// Postgres (on that backend).
    Postgres,
    /// The workers' and the relay's own processes.
    Functions,
}

impl Dependency {
    pub fn name(self) -> &'static str {
        match self {
            Self::Aws => "localstack",
            Self::Cache => "cache",
            Self::Postgres => "postgres",
            Self::Functions => "functions",
        }
    }
}

/// What is done to the dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injection {
    /// Connections refused and dropped for the duration.
    Cut(Duration),
    /// Accepted and never answered for the duration.
    BlackHole(Duration),
    /// Every chunk delayed by `.1` for `.0`.
    Slow(Duration, Duration),
    /// Every open connection reset, `.1` times, `.0` apart (mid-transaction under load).
    Resets(Duration, u32),
    /// The next `n` worker invocations killed after their work (store writes, sends) and
    /// before their reply: the event source mapping sees a failed invocation, and the whole
    /// batch comes back after the visibility timeout.
    WorkerKilled(u32),
    /// The next `n` relay runs killed mid-run (after 30 ms).
    RelayKilled(u32),
}

impl Injection {
    fn describe(self) -> String {
        match self {
            Self::Cut(d) => format!("cut {} s", d.as_secs()),
            Self::BlackHole(d) => format!("black-holed {} s", d.as_secs()),
            Self::Slow(d, by) => format!("slowed {} ms for {} s", by.as_millis(), d.as_secs()),
            Self::Resets(every, n) => format!("reset {n}× every {} ms", every.as_millis()),
            Self::WorkerKilled(n) => format!("{n} worker invocations killed before replying"),
            Self::RelayKilled(n) => format!("{n} relay runs killed mid-run"),
        }
    }
}

/// One scenario: a fault in one dependency, under load.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub dependency: Dependency,
    pub injection: Injection,
}

impl Scenario {
    pub fn name(&self) -> String {
        format!("{} {}", self.dependency.name(), self.injection.describe())
    }
}

/// The short set the test command runs: one fault per dependency of `store`.
pub fn short_set(store: Store) -> Vec<Scenario> {
    let mut set = vec![
        Scenario {
            dependency: Dependency::Aws,
            injection: Injection::Cut(Duration::from_secs(8)),
        },
        Scenario {
            dependency: Dependency::Cache,
            injection: Injection::BlackHole(Duration::from_secs(6)),
        },
    ];
    if store == Store::Postgres {
        set.push(Scenario {
            dependency: Dependency::Postgres,
            injection: Injection::Resets(Duration::from_millis(700), 6),
        });
    }
    set
}

/// The full set (`scripts/faults.sh`): each dependency cut 20 s, black-holed 20 s, slowed by
/// 300 ms for 30 s, and its connections reset mid-transaction.
pub fn full_set(store: Store) -> Vec<Scenario> {
    let mut dependencies = vec![Dependency::Aws, Dependency::Cache];
    if store == Store::Postgres {
        dependencies.push(Dependency::Postgres);
    }
    let mut set = Vec::new();
    for dependency in dependencies {
        for injection in [
            Injection::Cut(Duration::from_secs(20)),
            Injection::BlackHole(Duration::from_secs(20)),
            Injection::Slow(Duration::from_secs(30), Duration::from_millis(300)),
            Injection::Resets(Duration::from_millis(500), 10),
        ] {
            set.push(Scenario {
                dependency,
                injection,
            });
        }
    }
    // The store down for longer than the pending timeout (30 s here) while orders are pending.
    set.push(Scenario {
        dependency: if store == Store::Postgres {
            Dependency::Postgres
        } else {
            Dependency::Aws
        },
        injection: Injection::Cut(Duration::from_secs(35)),
    });
    for injection in [Injection::WorkerKilled(6), Injection::RelayKilled(5)] {
        set.push(Scenario {
            dependency: Dependency::Functions,
            injection,
        });
    }
    set
}

/// A shop whose dependencies are behind fault proxies, with the gateway, the pollers and the
/// relay's schedule running as `scripts/run.sh` runs them.
pub struct Rig {
    pub store: Store,
    pub app: Arc<TestApp>,
    pub base: String,
    pub aws: FaultProxy,
    pub cache: FaultProxy,
    pub postgres: FaultProxy,
    /// Worker invocations still to kill before their reply.
    worker_kills: Arc<std::sync::atomic::AtomicU32>,
    /// Relay runs still to kill mid-run.
    relay_kills: Arc<std::sync::atomic::AtomicU32>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _pollers: zx_local_gateway::Pollers,
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

impl Rig {
    pub async fn start(store: Store) -> Self {
        let aws = FaultProxy::start(host_port(&crate::aws_endpoint())).await;
        let cache = FaultProxy::start(host_port(&crate::cache_url())).await;
        let postgres = FaultProxy::start(host_port(&crate::database_url())).await;
        let database = crate::database_url().replace(
            &host_port(&crate::database_url()),
            &postgres.address.to_string(),
        );
        let cache_url = format!("redis://{}", cache.address);
        let app = TestApp::through(
            store,
            &format!("http://{}", aws.address),
            &[
                ("CACHE_URL", cache_url.as_str()),
                ("DATABASE_URL", database.as_str()),
                // Short enough for a test to see expiry; the relay runs every 2 s.
                ("ORDER_PENDING_TIMEOUT", "30"),
            ],
        )
        .await;
        let app = Arc::new(app);
        let base = app.gateway().await;
        let worker_kills = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let relay_kills = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let workers = Arc::new(app.workers().wrapped(
            |_, handler| killable_worker(handler, worker_kills.clone()),
            |relay| killable_relay(relay, relay_kills.clone()),
        ));
        let pollers = app.start_pollers(&workers, &[]);
        // The relay's schedule, every 2 s (one run at a time, as its reserved concurrency).
        let relay = tokio::spawn({
            let workers = workers.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    workers
                        .run_relay_until(Instant::now() + Duration::from_secs(10))
                        .await;
                }
            }
        });
        Self {
            store,
            app,
            base,
            aws,
            cache,
            postgres,
            worker_kills,
            relay_kills,
            tasks: vec![relay],
            _pollers: pollers,
        }
    }

    fn proxy(&self, dependency: Dependency) -> &FaultProxy {
        match dependency {
            Dependency::Aws | Dependency::Functions => &self.aws,
            Dependency::Cache => &self.cache,
            Dependency::Postgres => &self.postgres,
        }
    }

    /// Applies `injection` to `dependency` and returns when it has ended (the proxy forwards
    /// again; the kills are spent, or 20 s passed). `Err` says what could not be injected (kills
    /// that found nothing to kill).
    pub async fn inject(&self, dependency: Dependency, injection: Injection) -> Result<(), String> {
        match injection {
            Injection::WorkerKilled(n) => return spend(&self.worker_kills, n, "worker").await,
            Injection::RelayKilled(n) => return spend(&self.relay_kills, n, "relay").await,
            _ => {}
        }
        let proxy = self.proxy(dependency);
        match injection {
            Injection::WorkerKilled(_) | Injection::RelayKilled(_) => {}
            Injection::Cut(d) => {
                proxy.set(Fault::Cut);
                tokio::time::sleep(d).await;
            }
            Injection::BlackHole(d) => {
                proxy.set(Fault::BlackHole);
                tokio::time::sleep(d).await;
            }
            Injection::Slow(d, by) => {
                proxy.set(Fault::Slow(by));
                tokio::time::sleep(d).await;
            }
            Injection::Resets(every, n) => {
                for _ in 0..n {
                    tokio::time::sleep(every).await;
                    proxy.reset();
                }
            }
        }
        proxy.set(Fault::None);
        Ok(())
    }
}

/// Sets `counter` to `n` and waits until it is spent (at most 20 s; then it is cleared and
/// the kills that did not happen are reported).
async fn spend(counter: &std::sync::atomic::AtomicU32, n: u32, what: &str) -> Result<(), String> {
    counter.store(n, Ordering::SeqCst);
    let until = Instant::now() + Duration::from_secs(20);
    while counter.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = counter.swap(0, Ordering::SeqCst);
    if left == 0 {
        Ok(())
    } else {
        Err(format!("only {} of {n} {what} kills happened", n - left))
    }
}

/// `handler`, killed after its work and before its reply while `kills` is above zero: the
/// batch is answered as a failed invocation (every record failed), as the event source mapping
/// sees a crashed one, so every message comes back after the visibility timeout.
fn killable_worker(
    handler: zx_app::workers::SqsHandler,
    kills: Arc<std::sync::atomic::AtomicU32>,
) -> zx_app::workers::SqsHandler {
    Arc::new(move |event: aws_lambda_events::sqs::SqsEvent, deadline| {
        let handler = handler.clone();
        let kills = kills.clone();
        Box::pin(async move {
            let ids: Vec<String> = event
                .records
                .iter()
                .filter_map(|r| r.message_id.clone())
                .collect();
            let response = handler(event, deadline).await;
            let killed = kills
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !killed {
                return response;
            }
            let mut failed = aws_lambda_events::sqs::SqsBatchResponse::default();
            failed.batch_item_failures = ids
                .into_iter()
                .map(|id| {
                    let mut failure = aws_lambda_events::sqs::BatchItemFailure::default();
                    failure.item_identifier = id;
                    failure
                })
                .collect();
            failed
        })
    })
}

/// `relay`, cut off 30 ms into a run while `kills` is above zero (its future dropped wherever
/// it was, as a killed process stops).
fn killable_relay(
    relay: zx_app::workers::ScheduledHandler,
    kills: Arc<std::sync::atomic::AtomicU32>,
) -> zx_app::workers::ScheduledHandler {
    Arc::new(move |deadline| {
        let relay = relay.clone();
        let kills = kills.clone();
        Box::pin(async move {
            let killed = kills
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if killed {
                tokio::time::timeout(Duration::from_millis(30), relay(deadline))
                    .await
                    .unwrap_or_default()
            } else {
                relay(deadline).await
            }
        })
    })
}

impl Drop for Rig {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How answers were classed.
#[derive(Debug, Default, Clone)]
pub struct Answers {
    pub ok: u64,
    pub client_errors: u64,
    pub limited: u64,
    pub unavailable: u64,
    /// What must never happen, each described.
    pub violations: Vec<String>,
}

/// What the load saw and did.
#[derive(Default)]
struct Record {
    answers: Answers,
    /// Idempotency key → the order ids answered for it (one, always).
    keys: HashMap<String, Vec<String>>,
    /// Orders accepted (202), with their units per product.
    accepted: HashMap<String, Vec<(ProductId, u32)>>,
    /// When each order was accepted.
    first_accepted_after: Option<Instant>,
    /// Customers whose own listing shows another number of orders than the keys they were
    /// answered 202 for (a key that made two orders, or an order no key answered for).
    key_mismatches: Vec<String>,
}

/// The load: virtual clients and an admin until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
    requests: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The 4xx answers that are correct for a request of the load, whatever the fault: an order
/// refused (sold out, out of stock, too many open orders), a move or a cancellation that lost a
/// race to the saga (409), a registration retried after it was stored (409). Anything else is a
/// violation (a 404 for a product that exists, a 401 for a valid token...).
fn expected_refusals(what: &str) -> &'static [u16] {
    match what {
        "order" | "order replay" | "cancel" | "admin move" | "register" => &[409],
        _ => &[],
    }
}

/// One answer classed: `Ok(status)` when it is allowed (a correct answer, a 429, a 503 with
/// `Retry-After`), the violation otherwise.
fn classify(
    what: &str,
    answer: &Result<(StatusCode, Option<u64>, Value), String>,
    took: Duration,
    record: &Mutex<Record>,
) {
    let mut record = record
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let answers = &mut record.answers;
    if took > FUNCTION_TIMEOUT + Duration::from_secs(1) {
        answers
            .violations
            .push(format!("{what}: answered after {took:?}"));
    }
    match answer {
        Err(error) => answers.violations.push(format!("{what}: {error}")),
        Ok((status, retry_after, _)) => match status.as_u16() {
            200..=299 => answers.ok += 1,
            429 => answers.limited += 1,
            503 if retry_after.is_some() => answers.unavailable += 1,
            503 => answers
                .violations
                .push(format!("{what}: 503 without Retry-After")),
            code @ 400..=499 if expected_refusals(what).contains(&code) => {
                answers.client_errors += 1
            }
            other => answers.violations.push(format!("{what}: {other}")),
        },
    }
}

struct Caller {
    http: Client,
    base: String,
    record: Arc<Mutex<Record>>,
    requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Caller {
    fn new(base: &str, source: IpAddr, load: &Load) -> Self {
        Self {
            http: Client::builder()
                .local_address(source)
                .timeout(CLIENT_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            base: base.to_owned(),
            record: load.record.clone(),
            requests: load.requests.clone(),
            stop: load.stop.clone(),
        }
    }

    /// One request, classed; `None` when the answer is not a success.
    async fn call(
        &self,
        what: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Option<u64>, Value), String> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                match response.bytes().await {
                    Ok(bytes) => Ok((
                        status,
                        retry_after,
                        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    )),
                    Err(error) => Err(format!("body cut off: {error}")),
                }
            }
            Err(error) if error.is_timeout() => Err("no answer (client timeout)".to_owned()),
            Err(error) => Err(format!("connection failed: {error}")),
        };
        classify(what, &answer, started.elapsed(), &self.record);
        answer
    }

    /// As a real client: a 503 or 429 is retried (the same request, so the same key) after
    /// `Retry-After` (at most 3 s), until it succeeds or the load stops; other answers return.
    async fn retrying(
        &self,
        what: &str,
        method: Method,
        path: &str,
        token: Option<&str>,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> Option<(StatusCode, Value)> {
        for _ in 0..40 {
            match self
                .call(what, method.clone(), path, token, key, body)
                .await
            {
                Ok((status, retry_after, body))
                    if status == StatusCode::SERVICE_UNAVAILABLE
                        || status == StatusCode::TOO_MANY_REQUESTS =>
                {
                    let _ = body;
                    if self.stop.load(Ordering::Relaxed) && key.is_none() && what != "my orders" {
                        return None;
                    }
                    let wait = retry_after.unwrap_or(1).clamp(1, 3);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                Ok((status, _, body)) => return Some((status, body)),
                Err(_) => {
                    if self.stop.load(Ordering::Relaxed) && key.is_none() && what != "my orders" {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        None
    }
}

impl Load {
    /// Starts `clients` customers (each from its own loopback address, 127.0.<n>.<m>) and an
    /// admin, browsing and ordering `products` until [`Load::stop`].
    pub fn start(rig: &Rig, clients: u16, products: &[ProductId], admin: String) -> Self {
        let mut load = Self {
            stop: Arc::new(AtomicBool::new(false)),
            record: Arc::default(),
            requests: Arc::default(),
            tasks: Vec::new(),
        };
        // The random part of a v4 id (a v7 id starts with the time: the same for scenarios a
        // few seconds apart, so their customers would be the same accounts).
        let tag: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .take(8)
            .collect();
        for n in 0..clients {
            let [hi, lo] = (n + 2).to_be_bytes();
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, hi.wrapping_add(10), lo));
            let caller = Caller::new(&rig.base, source, &load);
            let products = products.to_vec();
            let name = format!("v{tag}{n}");
            load.tasks.push(tokio::spawn(async move {
                customer(caller, name, products).await
            }));
        }
        let caller = Caller::new(&rig.base, IpAddr::V4(Ipv4Addr::new(127, 0, 9, 1)), &load);
        load.tasks.push(tokio::spawn(
            async move { admin_moves(caller, admin).await },
        ));
        load
    }

    /// Stops the clients (an order already asked for is still retried to its answer) and
    /// returns what they saw.
    pub async fn stop(self) -> LoadOutcome {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .is_err()
            {
                // Never into the next scenario.
                abort.abort();
            }
        }
        let record = std::mem::take(
            &mut *self
                .record
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        LoadOutcome {
            requests: self.requests.load(Ordering::Relaxed),
            record,
        }
    }

    /// When the first order was accepted after `since` (the load records each acceptance).
    pub fn mark(&self) {
        if let Ok(mut record) = self.record.lock() {
            record.first_accepted_after = None;
        }
    }

    pub fn first_acceptance(&self) -> Option<Instant> {
        self.record.lock().ok()?.first_accepted_after
    }
}

/// What one load run saw.
pub struct LoadOutcome {
    pub requests: u64,
    record: Record,
}

async fn customer(caller: Caller, name: String, products: Vec<ProductId>) {
    let email = format!("{name}@example.com");
    let password = "password-123";
    let registered = caller
        .retrying(
            "register",
            Method::POST,
            "/api/v1/users/register",
            None,
            None,
            Some(&json!({"username": name, "email": email, "password": password})),
        )
        .await;
    if !registered.is_some_and(|(s, _)| s == StatusCode::CREATED || s == StatusCode::CONFLICT) {
        return;
    }
    let login = json!({"email": email, "password": password});
    let Some((StatusCode::OK, body)) = caller
        .retrying(
            "login",
            Method::POST,
            "/api/v1/users/login",
            None,
            None,
            Some(&login),
        )
        .await
    else {
        return;
    };
    let Some(token) = body["token"].as_str().map(str::to_owned) else {
        return;
    };
    let mut mine: Vec<String> = Vec::new();
    let mut keys_accepted = std::collections::HashSet::new();
    let mut step: u64 = 0;
    while !caller.stop.load(Ordering::Relaxed) {
        step += 1;
        let product = &products[usize::try_from(step).unwrap_or(0) % products.len()];
        match step % 10 {
            // Browsing: listings and product reads.
            0..=5 => {
                let _ = caller
                    .call(
                        "list",
                        Method::GET,
                        "/api/v1/products?limit=10",
                        None,
                        None,
                        None,
                    )
                    .await;
            }
            6 | 7 => {
                let _ = caller
                    .call(
                        "product",
                        Method::GET,
                        &format!("/api/v1/products/{product}"),
                        None,
                        None,
                        None,
                    )
                    .await;
            }
            8 => {
                // An order, retried with its key until it is answered.
                let key = crate::unique();
                let body = json!({"items": [{"productId": product.as_str(), "quantity": 1}]});
                if let Some((status, answer)) = caller
                    .retrying(
                        "order",
                        Method::POST,
                        "/api/v1/orders",
                        Some(&token),
                        Some(&key),
                        Some(&body),
                    )
                    .await
                    && status == StatusCode::ACCEPTED
                    && let Some(id) = answer["orderId"].as_str()
                {
                    {
                        let mut record = caller
                            .record
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        record
                            .keys
                            .entry(key.clone())
                            .or_default()
                            .push(id.to_owned());
                        record
                            .accepted
                            .insert(id.to_owned(), vec![(product.clone(), 1)]);
                        if record.first_accepted_after.is_none() {
                            record.first_accepted_after = Some(Instant::now());
                        }
                    }
                    mine.push(id.to_owned());
                    keys_accepted.insert(key.clone());
                    // The same key again: the same order.
                    if step % 20 == 8
                        && let Some((StatusCode::ACCEPTED | StatusCode::OK, again)) = caller
                            .retrying(
                                "order replay",
                                Method::POST,
                                "/api/v1/orders",
                                Some(&token),
                                Some(&key),
                                Some(&body),
                            )
                            .await
                        && let Some(again) = again["orderId"].as_str()
                    {
                        caller
                            .record
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .keys
                            .entry(key)
                            .or_default()
                            .push(again.to_owned());
                    }
                }
            }
            _ => {
                // Now and then, cancel one's oldest order.
                if step % 30 == 9 && !mine.is_empty() {
                    let id = mine.remove(0);
                    let _ = caller
                        .call(
                            "cancel",
                            Method::POST,
                            &format!("/api/v1/orders/{id}/cancel"),
                            Some(&token),
                            None,
                            None,
                        )
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // As the customer sees it: one order per key that was answered 202, no other.
    let listed = count_my_orders(&caller, &token).await;
    if listed != Some(keys_accepted.len()) {
        caller
            .record
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .key_mismatches
            .push(format!(
                "{name}: {} keys accepted, {listed:?} orders listed",
                keys_accepted.len()
            ));
    }
}

/// How many orders the customer's own listing shows (every page), retrying as a client would.
async fn count_my_orders(caller: &Caller, token: &str) -> Option<usize> {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/orders?limit=100&cursor={c}"),
            None => "/api/v1/orders?limit=100".to_owned(),
        };
        let (status, page) = caller
            .retrying("my orders", Method::GET, &path, Some(token), None, None)
            .await?;
        if status != StatusCode::OK {
            return None;
        }
        count += page["items"].as_array().map_or(0, Vec::len);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Some(count),
        }
    }
    None
}

/// The admin pays and ships confirmed orders it finds in its listing.
async fn admin_moves(caller: Caller, token: String) {
    while !caller.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let Ok((StatusCode::OK, _, page)) = caller
            .call(
                "admin list",
                Method::GET,
                "/api/v1/orders?status=confirmed&limit=5",
                Some(&token),
                None,
                None,
            )
            .await
        else {
            continue;
        };
        let ids: Vec<String> = page["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|o| o["orderId"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for id in ids.into_iter().take(2) {
            for status in ["paid", "shipped"] {
                let _ = caller
                    .call(
                        "admin move",
                        Method::PATCH,
                        &format!("/api/v1/orders/{id}/status"),
                        Some(&token),
                        None,
                        Some(&json!({ "status": status })),
                    )
                    .await;
            }
        }
    }
}

/// The result of one scenario.
pub struct ScenarioReport {
    pub backend: &'static str,
    pub scenario: String,
    pub requests: u64,
    pub answers: Answers,
    pub accepted: usize,
    pub settled: usize,
    pub by_status: BTreeMap<String, usize>,
    pub conserved: Result<(), String>,
    pub keys_unique: Result<(), String>,
    pub first_order_after_fault: Option<Duration>,
    pub settled_after_fault: Option<Duration>,
    /// Messages in the dead-letter queues at the end (each one a saga step left undone).
    pub dead_lettered: u64,
    /// Whether the fault was injected as asked.
    pub injected: Result<(), String>,
}

impl ScenarioReport {
    pub fn holds(&self) -> bool {
        self.answers.violations.is_empty()
            && self.injected.is_ok()
            && self.first_order_after_fault.is_some()
            && self.settled_after_fault.is_some()
            && self.dead_lettered == 0
            && self.accepted == self.settled
            && self.conserved.is_ok()
            && self.keys_unique.is_ok()
    }

    /// The line the test command prints.
    pub fn line(&self) -> String {
        let verdict = |r: &Result<(), String>| match r {
            Ok(()) => "ok".to_owned(),
            Err(why) => format!("FAILED ({why})"),
        };
        let secs =
            |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        format!(
            "[faults] {} | {} | {} requests: {} ok, {} 4xx, {} 429, {} 503+Retry-After, {} violations | orders {} accepted, {} settled {:?} | stock {} | keys {} | dead letters {} | recovery: first order {}, settled {} | {}",
            self.backend,
            self.scenario,
            self.requests,
            self.answers.ok,
            self.answers.client_errors,
            self.answers.limited,
            self.answers.unavailable,
            self.answers.violations.len(),
            self.accepted,
            self.settled,
            self.by_status,
            verdict(&self.conserved),
            verdict(&self.keys_unique),
            self.dead_lettered,
            secs(self.first_order_after_fault),
            secs(self.settled_after_fault),
            if self.holds() { "HOLDS" } else { "FAILED" }
        )
    }

    /// A markdown table row for the full report.
    pub fn row(&self) -> String {
        let mut row = String::new();
        let _ = write!(
            row,
            "| {} | {} | {} | {} / {} / {} / {} | {} | {} / {} | {} | {} | {} | {} | {} / {} |",
            self.backend,
            self.scenario,
            self.requests,
            self.answers.ok + self.answers.client_errors,
            self.answers.limited,
            self.answers.unavailable,
            self.answers.violations.len(),
            if self.answers.violations.is_empty() {
                "none".to_owned()
            } else {
                self.answers
                    .violations
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            },
            self.accepted,
            self.settled,
            if self.conserved.is_ok() { "yes" } else { "NO" },
            if self.keys_unique.is_ok() {
                "yes"
            } else {
                "NO"
            },
            self.dead_lettered,
            if self.holds() { "holds" } else { "FAILED" },
            self.first_order_after_fault
                .map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
            self.settled_after_fault
                .map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        );
        row
    }
}

/// Runs `scenario` on `rig` under load: 3 s of load, the fault, load until an order is
/// accepted again (at most 20 s), then the invariants once everything has settled.
pub async fn run(rig: &Rig, scenario: Scenario, clients: u16) -> ScenarioReport {
    let products_store = rig.app.services.products().expect("products");
    let mut products = Vec::new();
    let mut initial: HashMap<ProductId, i64> = HashMap::new();
    for (i, stock) in [40_i64, 40, 1000].into_iter().enumerate() {
        let product = crate::sample_product(
            &format!("Fault {i}"),
            "a product under fault",
            "faults",
            500,
            stock,
        );
        products_store
            .create_product(&product)
            .await
            .expect("a product");
        initial.insert(product.id.clone(), stock);
        products.push(product.id);
    }
    let admin = rig.app.stored_user_token(Role::Admin).await.1;
    let load = Load::start(rig, clients, &products, admin);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let injected = rig.inject(scenario.dependency, scenario.injection).await;
    let fault_ended = Instant::now();
    load.mark();
    // Load goes on until the system answers orders again (bounded).
    let recovered_by = fault_ended + Duration::from_secs(20);
    while load.first_acceptance().is_none() && Instant::now() < recovered_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first_order_after_fault = load
        .first_acceptance()
        .map(|at| at.saturating_duration_since(fault_ended));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outcome = load.stop().await;
    let record = outcome.record;
    // Every accepted order settles (confirmed or beyond, or cancelled) within the bound.
    let orders = rig.app.services.orders().expect("orders");
    let deadline = fault_ended + SETTLE_BOUND;
    let ids: Vec<OrderId> = record
        .accepted
        .keys()
        .filter_map(|id| OrderId::parse(id).ok())
        .collect();
    let mut settled_after_fault = None;
    let mut statuses: HashMap<OrderId, OrderStatus> = HashMap::new();
    loop {
        statuses.clear();
        for chunk in ids.chunks(50) {
            if let Ok(rows) = orders.find_orders(chunk).await {
                for row in rows {
                    if let Ok(order) = row.value {
                        statuses.insert(order.id.clone(), order.status);
                    }
                }
            }
        }
        let pending = ids
            .iter()
            .filter(|id| statuses.get(*id).is_none_or(|s| *s == OrderStatus::Pending))
            .count();
        if pending == 0
            && drained(rig).await
            && conserved(rig, &products, &initial, &record, &statuses)
                .await
                .is_ok()
        {
            settled_after_fault = Some(fault_ended.elapsed());
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = ids
        .iter()
        .filter(|id| {
            statuses
                .get(*id)
                .is_some_and(|s| *s != OrderStatus::Pending)
        })
        .count();
    let mut by_status = BTreeMap::new();
    for status in statuses.values() {
        *by_status.entry(status.to_string()).or_default() += 1;
    }
    let conserved = conserved(rig, &products, &initial, &record, &statuses).await;
    let mut dead_lettered = 0;
    for url in [&rig.app.queues.inventory_dlq, &rig.app.queues.orders_dlq] {
        // A queue that cannot be read counts as holding dead letters.
        dead_lettered += crate::queue_depth(&rig.app.aws, url)
            .await
            .unwrap_or(u64::MAX / 4);
    }
    let keys_unique = record
        .keys
        .iter()
        .find(|(_, ids)| ids.windows(2).any(|w| w[0] != w[1]))
        .map_or(Ok(()), |(key, ids)| {
            Err(format!("key {key} gave orders {ids:?}"))
        })
        .and_then(|()| match record.key_mismatches.first() {
            Some(mismatch) => Err(mismatch.clone()),
            None => Ok(()),
        });
    ScenarioReport {
        backend: match rig.store {
            Store::DynamoDb => "dynamodb",
            Store::Postgres => "postgres",
        },
        scenario: scenario.name(),
        requests: outcome.requests,
        answers: record.answers.clone(),
        accepted: ids.len(),
        settled,
        by_status,
        conserved,
        keys_unique,
        first_order_after_fault,
        settled_after_fault,
        dead_lettered,
        injected,
    }
}

/// Whether both saga queues are empty: every message handled and deleted.
async fn drained(rig: &Rig) -> bool {
    crate::queue_depth(&rig.app.aws, &rig.app.queues.inventory).await == Some(0)
        && crate::queue_depth(&rig.app.aws, &rig.app.queues.orders).await == Some(0)
}

/// Per product: initial stock = available + reserved + shipped units, and reserved = the units
/// of the orders that hold stock (confirmed, paid): nothing sold twice, nothing lost, no
/// reservation counted twice.
async fn conserved(
    rig: &Rig,
    products: &[ProductId],
    initial: &HashMap<ProductId, i64>,
    record: &Record,
    statuses: &HashMap<OrderId, OrderStatus>,
) -> Result<(), String> {
    let store = rig.app.services.products().map_err(|e| e.to_string())?;
    for product in products {
        let stored = store
            .find_product(product)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("product gone")?;
        let (mut held, mut shipped) = (0_i64, 0_i64);
        for (id, lines) in &record.accepted {
            let Some(status) = OrderId::parse(id).ok().and_then(|id| statuses.get(&id)) else {
                continue;
            };
            let units: i64 = lines
                .iter()
                .filter(|(p, _)| p == product)
                .map(|(_, q)| i64::from(*q))
                .sum();
            match status {
                OrderStatus::Confirmed | OrderStatus::Paid => held += units,
                OrderStatus::Shipped | OrderStatus::Delivered => shipped += units,
                _ => {}
            }
        }
        let start = initial.get(product).copied().unwrap_or(0);
        let (available, reserved) = (stored.stock.available, stored.stock.reserved);
        if available + reserved + shipped != start || reserved != held {
            return Err(format!(
                "{product}: initial {start} ≠ available {available} + reserved {reserved} + shipped {shipped}, or reserved ≠ held {held}{}",
                held_elsewhere(rig, product, record, statuses).await
            ));
        }
    }
    Ok(())
}

/// On Postgres, the orders whose reservation of `product` is held though they do not hold
/// stock (for the report of a failed conservation).
async fn held_elsewhere(
    rig: &Rig,
    product: &ProductId,
    record: &Record,
    statuses: &HashMap<OrderId, OrderStatus>,
) -> String {
    if rig.store != Store::Postgres {
        return String::new();
    }
    let Ok(pool) = sqlx::PgPool::connect(&crate::database_url()).await else {
        return String::new();
    };
    let rows: Vec<(String, String)> = sqlx::query_as(&format!(
        "select order_id, state from \"{}\".reservations where lines like $1",
        rig.app.config.products_schema.as_str()
    ))
    .bind(format!("%{product}%"))
    .fetch_all(&pool)
    .await
    .unwrap_or_default();
    pool.close().await;
    let orders = rig.app.services.orders().ok();
    let mut odd = Vec::new();
    for (order_id, state) in rows {
        let known = record.accepted.contains_key(&order_id);
        let status = match OrderId::parse(&order_id).ok() {
            Some(id) => match statuses.get(&id) {
                Some(status) => Some(*status),
                None => match &orders {
                    Some(orders) => orders
                        .find_order(&id)
                        .await
                        .ok()
                        .flatten()
                        .map(|o| o.status),
                    None => None,
                },
            },
            None => None,
        };
        let holds = matches!(status, Some(OrderStatus::Confirmed | OrderStatus::Paid));
        if (state == "held") != holds || !known {
            odd.push(format!(
                "{order_id}: reservation {state}, order {status:?}, known to its client: {known}"
            ));
        }
    }
    format!("; odd: {odd:?}")
}
