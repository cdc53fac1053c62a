//! Measures what the edge adds to every request (see docs/benchmarks.md):
//! - verifying an Ed25519 bearer token (`TokenVerifier::verify`), in-process;
//! - the whole edge (`Edge::handle`) around a trivial handler, with and without a token, no
//!   limiter, so the difference is authentication alone;
//! - counting a request for its client in the cache (`RateLimiter::count`: one MULTI/EXEC
//!   round trip to Redis at `CACHE_URL`, default 127.0.0.1:6379).
//!
//!   cargo run --profile measure -p zx-tests --example edge_cost

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_http::{Body, Request, Response};
use zx_auth::{SigningKey, TokenIssuer, TokenSettings, TokenVerifier};
use zx_domain::{Email, Role, Timestamp, UserId};
use zx_http::{Access, Edge};

fn per_op(label: &str, runs: u32, elapsed: Duration) {
    println!(
        "{label:58} {:>9.1} µs/op  ({runs} runs)",
        elapsed.as_secs_f64() * 1e6 / f64::from(runs)
    );
}

fn request(token: Option<&str>) -> Request {
    let mut request = Request::new(Body::Empty);
    if let Some(token) = token {
        request.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
    }
    request
}

#[tokio::main]
async fn main() {
    let settings = TokenSettings {
        issuer: "zhixuan".into(),
        audience: "zhixuan-api".into(),
        ttl: Duration::from_secs(3600),
        refresh_ttl: Duration::from_secs(86_400),
    };
    let key = SigningKey::generate().expect("key");
    let verifier = Arc::new(TokenVerifier::new(
        std::slice::from_ref(key.public_key()),
        &settings,
    ));
    let token = TokenIssuer::new(&key, settings)
        .issue_at(
            &UserId::generate(),
            &Email::parse("bench@example.com").expect("email"),
            Role::Customer,
            Timestamp::now().unix_seconds(),
        )
        .expect("token")
        .token;

    let runs = 20_000;
    let started = Instant::now();
    for _ in 0..runs {
        verifier
            .verify(std::hint::black_box(&token))
            .expect("valid");
    }
    per_op(
        "TokenVerifier::verify (valid EdDSA token)",
        runs,
        started.elapsed(),
    );

    let edge = Edge::new(Access::Public, Some(verifier.clone()), None);
    let handler = |_request: Request| async { Ok(Response::new(Body::Empty)) };
    for (label, token) in [
        ("Edge::handle, no token (no limiter)", None),
        (
            "Edge::handle, valid token (no limiter)",
            Some(token.as_str()),
        ),
    ] {
        let started = Instant::now();
        for _ in 0..runs {
            let response = edge.handle(request(token), handler).await;
            std::hint::black_box(response);
        }
        per_op(label, runs, started.elapsed());
    }

    let url = std::env::var("CACHE_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cache = zx_cache::Cache::new(zx_cache::CacheSettings {
        url,
        timeout: Duration::from_millis(100),
        key_prefix: format!("zx-bench-{}:", uuid::Uuid::now_v7().simple()),
    })
    .expect("cache");
    let limiter = zx_cache::RateLimiter::new(cache);
    limiter
        .count("warm-up", 1_000_000)
        .await
        .expect("Redis at CACHE_URL");
    let runs = 5_000;
    let started = Instant::now();
    for i in 0..runs {
        let window = limiter
            .count(&format!("client-{}", i % 50), 1_000_000)
            .await;
        std::hint::black_box(window.expect("counted"));
    }
    per_op(
        "RateLimiter::count (one round trip to local Redis)",
        runs,
        started.elapsed(),
    );
}
