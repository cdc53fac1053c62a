//! Property tests of every parser of untrusted input: arbitrary strings and bytes give a value
//! or a typed error, never a panic. 10,000 cases each; every test prints its count (the test
//! command shows it).
//!
//! Parsers covered: the listing cursor and every listing query parameter, the stock quantity,
//! path ids, the `Idempotency-Key` header, the `Authorization` header and bearer tokens, the
//! `Content-Type` check and every JSON request body, and the domain values inside the bodies;
//! the orders cursor, filters and bodies, and every queue message the workers parse.

use lambda_http::{Body, Request, RequestExt};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::HashMap;
use std::time::Duration;
use zx_auth::token::bearer_token;
use zx_auth::{SigningKey, TokenIssuer, TokenSettings, TokenVerifier};
use zx_domain::{
    CategoryId, Cursor, Description, Email, ImageUrl, PageLimit, Password, Price, ProductId,
    ProductName, Role, SearchTerm, StockChangeId, Timestamp, UserId, Username,
};

const CASES: u32 = 10_000;

/// Runs `property` on `CASES` values of `strategy`; panics (with the shrunk input) on failure.
fn check<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new(config)
        .run(&strategy, property)
        .unwrap_or_else(|error| panic!("property {name}: {error}"));
    println!("property {name}: {CASES} cases passed");
}

/// Any text: arbitrary Unicode, including multi-byte characters and control characters.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9a-fA-F]{0,120}",
        "[ -~]{0,80}",
        proptest::collection::vec(any::<char>(), 0..64).prop_map(|c| c.into_iter().collect()),
    ]
}

/// Any bytes, as text when they happen to be UTF-8 and lossily otherwise.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..512)
}

#[test]
fn prop_cursor_decoding_never_panics() {
    check("cursor", text(), |token| {
        let _ = Cursor::decode(&token);
        Ok(())
    });
    // Valid cursors, then one byte changed anywhere: still no panic, and round trips hold.
    let cursor = (0i64..4_102_444_800_000, any::<u128>());
    check(
        "cursor (mutated)",
        (cursor, any::<usize>(), any::<char>()),
        |((millis, raw), at, c)| {
            let original = Cursor {
                created_at: Timestamp::from_unix_millis(millis).unwrap_or_else(Timestamp::now),
                id: ProductId::parse(&uuid::Uuid::from_u128(raw).to_string())
                    .map_err(TestCaseError::fail)?,
            };
            let token = original.encode();
            prop_assert_eq!(Cursor::decode(&token).ok(), Some(original));
            let mut chars: Vec<char> = token.chars().collect();
            if !chars.is_empty() {
                let i = at % chars.len();
                chars[i] = c;
            }
            let _ = Cursor::decode(&chars.into_iter().collect::<String>());
            Ok(())
        },
    );
}

#[test]
fn prop_path_ids_never_panic() {
    check("path ids", text(), |id| {
        if let Ok(parsed) = ProductId::parse(&id) {
            prop_assert_eq!(ProductId::parse(parsed.as_str()).ok(), Some(parsed));
        }
        let _ = UserId::parse(&id);
        Ok(())
    });
}

#[test]
fn prop_query_values_never_panic() {
    check("query values", text(), |value| {
        let _ = CategoryId::parse(&value);
        let _ = SearchTerm::parse(&value);
        let _ = PageLimit::parse(&value);
        let _ = value.trim().parse::<i64>().map(Price::from_minor);
        let _ = zx_products::stock::parse_quantity(Some(&value));
        Ok(())
    });
}

/// A listing request with any of the known parameters set to any text.
#[test]
fn prop_listing_queries_never_panic() {
    let names = prop::sample::select(vec![
        "category", "minPrice", "maxPrice", "search", "limit", "cursor", "page", "other",
    ]);
    let query = proptest::collection::vec((names, text()), 0..8);
    check("listing query", query, |pairs| {
        let params: HashMap<String, Vec<String>> =
            pairs.into_iter().fold(HashMap::new(), |mut map, (k, v)| {
                map.entry(k.to_owned()).or_default().push(v);
                map
            });
        let request = Request::new(Body::Empty).with_query_string_parameters(params);
        let _ = zx_products::handlers::ListRequest::parse(&request);
        Ok(())
    });
}

#[test]
fn prop_headers_never_panic() {
    check("headers", text(), |value| {
        let _ = bearer_token(&value);
        let _ = StockChangeId::parse(&value).map(|id| id.scoped("user"));
        Ok(())
    });
}

/// A request with a JSON body of `bytes` and any `Content-Type`.
fn json_request(content_type: &str, body: Vec<u8>) -> Request {
    let mut request = Request::new(Body::Binary(body));
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        request
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    request
}

/// Bodies that look like JSON objects with the fields the API knows, of any JSON type.
fn json_object() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "username",
        "email",
        "password",
        "currentPassword",
        "role",
        "name",
        "description",
        "price",
        "stock",
        "categoryId",
        "images",
        "available",
        "delta",
        "x",
    ]);
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        text().prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::hash_map("[a-z]{1,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::hash_map(names, value, 0..6).prop_map(|fields| {
        let object: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        serde_json::to_vec(&object).unwrap_or_default()
    })
}

#[test]
fn prop_json_bodies_never_panic() {
    let content_type = prop_oneof![
        Just("application/json".to_owned()),
        Just("application/problem+json; charset=utf-8".to_owned()),
        text(),
    ];
    let body = prop_oneof![bytes(), json_object(), text().prop_map(String::into_bytes)];
    check(
        "JSON bodies",
        (content_type, body),
        |(content_type, body)| {
            let request = json_request(&content_type, body);
            let _ = zx_http::json_body::<zx_users::handlers::RegisterBody>(&request);
            let _ = zx_http::json_body::<zx_users::handlers::LoginBody>(&request);
            let _ = zx_http::json_body::<zx_users::handlers::UpdateBody>(&request);
            let _ = zx_http::json_body::<zx_products::handlers::CreateBody>(&request);
            let _ = zx_http::json_body::<zx_products::handlers::UpdateBody>(&request);
            let _ = zx_http::json_body::<zx_products::stock::PutBody>(&request);
            if let Ok(body) = zx_http::json_body::<zx_orders::http::CreateBody>(&request) {
                let _ = zx_orders::http::parse_order_request(body);
            }
            let _ = zx_http::json_body::<zx_orders::http::StatusBody>(&request);
            Ok(())
        },
    );
}

#[test]
fn prop_body_fields_never_panic() {
    check("body fields", text(), |value| {
        let _ = Email::parse(&value);
        let _ = Username::parse(&value);
        let _ = Password::parse(&value);
        let _ = Role::parse(&value);
        let _ = ProductName::parse(&value);
        let _ = Description::parse(&value);
        let _ = ImageUrl::parse(&value);
        Ok(())
    });
    check("body numbers", any::<i64>(), |n| {
        let _ = Price::from_minor(n);
        let _ = zx_domain::Stock::parse_units(n);
        Ok(())
    });
}

fn settings() -> TokenSettings {
    TokenSettings {
        issuer: "zhixuan".into(),
        audience: "zhixuan-api".into(),
        ttl: Duration::from_secs(60),
        refresh_ttl: Duration::from_secs(600),
    }
}

#[test]
fn prop_tokens_never_panic_and_forgeries_never_verify() {
    let key = SigningKey::generate().unwrap();
    let verifier = TokenVerifier::new(std::slice::from_ref(key.public_key()), &settings());
    check("tokens (any text)", text(), |token| {
        prop_assert!(verifier.verify(&token).is_err());
        Ok(())
    });
    // Three base64url segments of arbitrary bytes: well-formed, never valid.
    use base64::Engine;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let segments = (bytes(), bytes(), bytes());
    check("tokens (three segments)", segments, |(h, p, s)| {
        let token = format!("{}.{}.{}", b64(h), b64(p), b64(s));
        prop_assert!(verifier.verify(&token).is_err());
        Ok(())
    });
    // A real token with one character changed never verifies as a different token.
    let issued = TokenIssuer::new(&key, settings())
        .issue_at(
            &UserId::generate(),
            &Email::parse("a@example.com").unwrap(),
            Role::Customer,
            Timestamp::now().unix_seconds(),
        )
        .unwrap();
    check(
        "tokens (one change)",
        (any::<usize>(), any::<char>()),
        |(at, c)| {
            let mut chars: Vec<char> = issued.token.chars().collect();
            let i = at % chars.len();
            if chars[i] == c {
                return Ok(());
            }
            chars[i] = c;
            let forged: String = chars.into_iter().collect();
            if let Ok(claims) = verifier.verify(&forged) {
                // Only base64 padding bits can change without changing the token's meaning.
                prop_assert_eq!(claims, issued.claims.clone());
            }
            Ok(())
        },
    );
}

#[test]
fn prop_refresh_tokens_never_panic_and_only_our_form_parses() {
    check("refresh tokens (any text)", text(), |token| {
        if let Some((session, _)) = zx_auth::parse_refresh_token(&token) {
            prop_assert!(token.starts_with(session.as_str()));
            prop_assert_eq!(token.len(), zx_auth::refresh::REFRESH_TOKEN_CHARS);
        }
        Ok(())
    });
}

#[test]
fn prop_order_inputs_never_panic() {
    check("order fields", text(), |value| {
        let _ = zx_domain::OrderCursor::decode(&value);
        let _ = zx_domain::OrderStatus::parse(&value);
        let _ = zx_domain::IdempotencyKey::parse(&value);
        let _ = zx_domain::ShippingAddress::parse(&value);
        let _ = zx_domain::OrderId::parse(&value);
        Ok(())
    });
}

/// Queue messages: arbitrary text, and envelopes with arbitrary types, versions and data.
#[test]
fn prop_queue_messages_never_panic() {
    let envelope = (text(), any::<u32>(), json_object()).prop_map(|(kind, version, data)| {
        serde_json::json!({
            "id": "m", "type": kind, "version": version % 3,
            "occurredAt": "2026-11-25T00:00:00Z",
            "data": serde_json::from_slice::<serde_json::Value>(&data).unwrap_or_default(),
        })
        .to_string()
    });
    let body = prop_oneof![text(), envelope];
    check("queue messages", body, |body| {
        let _ = zx_orders::messages::InventoryCommand::parse(&body);
        let _ = zx_orders::messages::InventoryOutcome::parse(&body);
        Ok(())
    });
}

/// The idempotency fingerprint names the normalised request: the same products and summed
/// quantities in any order or split give the same fingerprint; another total does not.
#[test]
fn prop_order_fingerprints_ignore_order_and_splits() {
    let ids: Vec<ProductId> = (0..5).map(|_| ProductId::generate()).collect();
    let lines = proptest::collection::vec((0usize..5, 1u32..=100), 1..20);
    check(
        "order fingerprints",
        (lines, any::<u64>()),
        |(lines, seed)| {
            let request = |lines: &[(usize, u32)]| zx_orders::usecases::OrderRequest {
                lines: lines.iter().map(|(i, q)| (ids[*i].clone(), *q)).collect(),
                shipping_address: None,
            };
            let mut shuffled = lines.clone();
            // A deterministic shuffle from the seed.
            let len = shuffled.len();
            for i in 0..len {
                let j = usize::try_from((seed >> (i % 60)) % len as u64).unwrap_or(0);
                shuffled.swap(i, j);
            }
            let (a, b) = (request(&lines), request(&shuffled));
            prop_assert_eq!(a.fingerprint(), b.fingerprint());
            prop_assert_eq!(a.normalised(), b.normalised());
            let total: u32 = lines.iter().map(|(_, q)| q).sum();
            let summed: u32 = a.normalised().iter().map(|(_, q)| q).sum();
            prop_assert_eq!(total, summed);
            // A line split in two asks for the same thing.
            let mut split = lines.clone();
            if let Some(&(i, q)) = split.first().filter(|(_, q)| *q >= 2) {
                split[0] = (i, 1);
                split.push((i, q - 1));
                prop_assert_eq!(request(&split).fingerprint(), a.fingerprint());
            }
            let mut more = lines.clone();
            more.push((0, 1));
            prop_assert_ne!(request(&more).fingerprint(), a.fingerprint());
            Ok(())
        },
    );
}

/// A batch of reservations over sharded stock: 1–3 products of 1–8 shards (some retired), up
/// to 30 orders of 1–3 lines each.
/// Orders (lines of (product index, quantity)), products (active shards, each shard's units),
/// and the batch's spread.
type StockBatch = (Vec<Vec<(usize, u32)>>, Vec<(u16, Vec<i64>)>, usize);

fn stock_batch() -> impl Strategy<Value = StockBatch> {
    let product = (1u16..=8).prop_flat_map(|shards| {
        (
            1..=shards,
            proptest::collection::vec(0i64..20, usize::from(shards)),
        )
    });
    let products = proptest::collection::vec(product, 1..=3);
    products.prop_flat_map(|products| {
        let n = products.len();
        let order = proptest::collection::btree_map(0..n, 1u32..6, 1..=n)
            .prop_map(|lines| lines.into_iter().collect::<Vec<_>>());
        (
            proptest::collection::vec(order, 0..30),
            Just(products),
            any::<usize>(),
        )
    })
}

/// The reservation planner never takes more than a shard holds, takes exactly what each held
/// order asked for, conserves every unit, and answers out of stock only when every shard of the
/// product together holds too little at that point of the batch.
#[test]
fn prop_stock_plans_never_oversell_and_never_refuse_falsely() {
    use zx_domain::stock::{Planned, Shard, StockRecords, plan};
    check(
        "stock plans",
        stock_batch(),
        |(orders, products, spread)| {
            let ids: Vec<ProductId> = products.iter().map(|_| ProductId::generate()).collect();
            let mut stock = HashMap::new();
            for (id, (active, shards)) in ids.iter().zip(&products) {
                let shards = shards
                    .iter()
                    .enumerate()
                    .map(|(i, available)| Shard {
                        index: u16::try_from(i).unwrap(),
                        available: *available,
                        reserved: 0,
                        version: 1,
                    })
                    .collect();
                stock.insert(
                    id.clone(),
                    StockRecords {
                        live: true,
                        active: *active,
                        shards,
                    },
                );
            }
            let batch: Vec<Vec<zx_domain::ReserveLine>> = orders
                .iter()
                .map(|lines| {
                    lines
                        .iter()
                        .map(|(p, quantity)| zx_domain::ReserveLine {
                            product_id: ids[*p].clone(),
                            quantity: *quantity,
                        })
                        .collect()
                })
                .collect();
            let planned = plan(&batch, &stock, spread);
            prop_assert_eq!(planned.outcomes.len(), batch.len());
            let mut totals: HashMap<ProductId, i64> = stock
                .iter()
                .map(|(id, r)| (id.clone(), r.shards.iter().map(|s| s.available).sum()))
                .collect();
            let mut taken: HashMap<(ProductId, u16), i64> = HashMap::new();
            for (lines, outcome) in batch.iter().zip(&planned.outcomes) {
                let fits = lines
                    .iter()
                    .all(|l| totals[&l.product_id] >= i64::from(l.quantity));
                match outcome {
                    Planned::Held(held) => {
                        prop_assert!(fits, "held an order the stock could not cover");
                        for line in lines {
                            let got: i64 = held
                                .iter()
                                .filter(|h| h.product_id == line.product_id)
                                .map(|h| i64::from(h.quantity))
                                .sum();
                            prop_assert_eq!(got, i64::from(line.quantity));
                            *totals.get_mut(&line.product_id).unwrap() -= got;
                        }
                        for h in held {
                            *taken.entry((h.product_id.clone(), h.shard)).or_default() +=
                                i64::from(h.quantity);
                        }
                    }
                    Planned::Rejected { product_id, reason } => {
                        prop_assert_eq!(*reason, "out_of_stock");
                        prop_assert!(!fits, "refused an order the stock could cover");
                        let line = lines.iter().find(|l| &l.product_id == product_id).unwrap();
                        prop_assert!(totals[product_id] < i64::from(line.quantity));
                    }
                }
            }
            for (key, units) in &taken {
                let shard = stock[&key.0]
                    .shards
                    .iter()
                    .find(|s| s.index == key.1)
                    .unwrap();
                prop_assert!(*units <= shard.available, "a shard gave more than it held");
                prop_assert_eq!(planned.takes.get(key).copied(), Some(*units));
            }
            prop_assert_eq!(planned.takes.len(), taken.len());
            for (id, left) in &totals {
                prop_assert_eq!(planned.left.get(id).copied().unwrap_or(0), *left);
            }
            Ok(())
        },
    );
}

/// Changing a product's shard count moves units between shards and never makes or loses one:
/// the active shards end even, the retired ones empty, none below zero.
#[test]
fn prop_resharding_conserves_stock() {
    use zx_domain::stock::{Shard, StockRecords, rebalance};
    let strategy = (
        proptest::collection::vec(0i64..1_000_000, 1..=32),
        1u16..=32,
    );
    check("resharding", strategy, |(available, active)| {
        let records = StockRecords {
            live: true,
            active: u16::try_from(available.len()).unwrap(),
            shards: available
                .iter()
                .enumerate()
                .map(|(i, a)| Shard {
                    index: u16::try_from(i).unwrap(),
                    available: *a,
                    reserved: 0,
                    version: 1,
                })
                .collect(),
        };
        let mut after: HashMap<u16, i64> = records
            .shards
            .iter()
            .map(|s| (s.index, s.available))
            .collect();
        for (index, change) in rebalance(&records, active) {
            *after.entry(index).or_default() += change;
        }
        let total: i64 = available.iter().sum();
        prop_assert_eq!(after.values().sum::<i64>(), total);
        prop_assert!(after.values().all(|a| *a >= 0));
        let active_values: Vec<i64> = (0..active)
            .map(|i| after.get(&i).copied().unwrap_or(0))
            .collect();
        let (lo, hi) = (
            active_values.iter().min().copied().unwrap_or(0),
            active_values.iter().max().copied().unwrap_or(0),
        );
        prop_assert!(hi - lo <= 1, "active shards uneven: {:?}", active_values);
        prop_assert!(
            after
                .iter()
                .filter(|(i, _)| **i >= active)
                .all(|(_, a)| *a == 0)
        );
        Ok(())
    });
}
