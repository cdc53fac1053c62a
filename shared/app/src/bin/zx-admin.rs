//! Operator commands (run by a person or a deploy step, never by an API function):
//!
//!   zx-admin migrate                 apply pending Postgres migrations of every service
//!                                    (DATABASE_URL; USERS_SCHEMA, PRODUCTS_SCHEMA, ORDERS_SCHEMA)
//!   zx-admin ensure-admin EMAIL USERNAME
//!                                    create that admin, or make the existing user an admin with
//!                                    that password; the password is read from ADMIN_PASSWORD
//!
//!   zx-admin seed-catalogue [COUNT]  load COUNT (default 300) demo products across eight
//!                                    categories; idempotent (fixed ids: a second run adds nothing)
//!   zx-admin recount-categories      rebuild a DynamoDB catalogue's category counters (GET
//!                                    /api/v1/categories) from its live products: once for
//!                                    products created before them, or after one went wrong
//!   zx-admin routes                  every HTTP function's routes as JSON (scripts/gen-events.py)
//!   zx-admin template [PATH]         rewrite template.yaml's generated function blocks
//!   zx-admin openapi [PATH]         write the API's OpenAPI 3.1 description (what
//!                                    GET /api/v1/openapi.json serves) to PATH, or print it;
//!                                    `zx-admin openapi docs/openapi.json` refreshes the docs copy
//!   zx-admin outbox parked          list the outbox rows the relay parked (unreadable, or
//!                                    refused for good by their destination), with why
//!   zx-admin outbox resend KEY       put a parked row back: the relay's next run sends it
//!   zx-admin jwt-kms-key [ALIAS]     the KMS key (ECC_NIST_P256, SIGN_VERIFY) tokens are signed
//!                                    with: the one ALIAS names, created (with the alias) if
//!                                    absent, or a new one without an alias; prints its ARN
//!                                    (JWT_SIGNING_KEY_ID, JwtSigningKeyArn) on the first line
//!                                    and its public key (JWT_PUBLIC_KEYS) on the second
//!   zx-admin jwt-keygen              print a new in-memory Ed25519 key pair (tests and tools
//!                                    only): the private key (JWT_PRIVATE_KEY, base64 PKCS#8) on
//!                                    the first line, the public key on the second
//!
//! The first admin exists only through `ensure-admin`: no endpoint can grant the role.

use std::process::ExitCode;

use zx_app::{Config, Services};
use zx_domain::{Email, Password, Role, User, Username};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["migrate"] => migrate().await,
        ["jwt-keygen"] => jwt_keygen(),
        ["jwt-kms-key"] => jwt_kms_key(None).await,
        ["jwt-kms-key", alias] => jwt_kms_key(Some(alias)).await,
        ["openapi"] => Ok(zx_app::functions::description().trim_end().to_owned()),
        ["openapi", path] => std::fs::write(path, zx_app::functions::description())
            .map(|()| format!("wrote {path}"))
            .map_err(|e| format!("cannot write {path}: {e}").into()),
        ["routes"] => routes(),
        ["template"] => template("template.yaml"),
        ["template", path] => template(path),
        ["ensure-admin", email, username] => ensure_admin(email, username).await,
        ["outbox", "parked"] => outbox(None).await,
        ["outbox", "resend", key] => outbox(Some(key)).await,
        ["recount-categories"] => recount_categories().await,
        ["seed-catalogue"] => seed_catalogue(300).await,
        ["seed-catalogue", count] => match count.parse() {
            Ok(count) if count <= 10_000 => seed_catalogue(count).await,
            _ => Err("COUNT must be a number up to 10000".into()),
        },
        _ => Err(
            "usage: zx-admin migrate | ensure-admin EMAIL USERNAME (password in ADMIN_PASSWORD) | seed-catalogue [COUNT] | recount-categories | outbox parked | outbox resend KEY | openapi [PATH] | routes | template [PATH] | jwt-kms-key [ALIAS] | jwt-keygen"
                .into(),
        ),
    };
    match outcome {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("zx-admin: {error}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<String, Box<dyn std::error::Error>>;

fn jwt_keygen() -> Outcome {
    let key = zx_auth::SigningKey::generate()?;
    Ok(format!(
        "{}\n{}",
        key.to_base64(),
        key.public_key().encoded()
    ))
}

/// Every HTTP function's routes as JSON (`{"<binary>": [["GET", "/path"], ...]}`): what
/// `scripts/gen-events.py` builds the sample events from.
fn routes() -> Outcome {
    let routes: serde_json::Map<String, serde_json::Value> = zx_app::functions::HTTP_FUNCTIONS
        .iter()
        .map(|f| {
            let routes = (f.routes)()
                .into_iter()
                .map(|r| serde_json::json!([r.method, r.path]))
                .collect();
            (f.name.to_owned(), serde_json::Value::Array(routes))
        })
        .collect();
    Ok(serde_json::to_string_pretty(&routes)?)
}

/// Rewrites the generated blocks of the SAM template at `path` from the registry.
fn template(path: &str) -> Result<String, Box<dyn std::error::Error>> {
    let current = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let next = zx_app::template::regenerate(&current)?;
    if next == current {
        return Ok(format!("{path} is up to date"));
    }
    std::fs::write(path, next).map_err(|e| format!("cannot write {path}: {e}"))?;
    Ok(format!("wrote {path}"))
}

/// The token-signing KMS key `alias` names (made if absent), or a new one: its ARN and public
/// key, one per line.
async fn jwt_kms_key(alias: Option<&str>) -> Outcome {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let kms = aws_sdk_kms::Client::new(&aws);
    let alias = alias.map(|a| {
        if a.starts_with("alias/") {
            a.to_owned()
        } else {
            format!("alias/{a}")
        }
    });
    let existing = match &alias {
        Some(alias) => match kms.describe_key().key_id(alias).send().await {
            Ok(described) => described
                .key_metadata()
                .map(|m| m.arn().unwrap_or(m.key_id()).to_owned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_not_found_exception()) =>
            {
                None
            }
            Err(e) => {
                return Err(format!(
                    "KMS DescribeKey {alias}: {}",
                    aws_sdk_kms::error::DisplayErrorContext(e)
                )
                .into());
            }
        },
        None => None,
    };
    let arn = match existing {
        Some(arn) => arn,
        None => {
            let created = kms
                .create_key()
                .key_spec(KeySpec::EccNistP256)
                .key_usage(KeyUsageType::SignVerify)
                .description("Zhixuan access-token signing key (ES256)")
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "KMS CreateKey: {}",
                        aws_sdk_kms::error::DisplayErrorContext(e)
                    )
                })?;
            let metadata = created
                .key_metadata()
                .ok_or("KMS CreateKey answered no key")?;
            let arn = metadata.arn().unwrap_or(metadata.key_id()).to_owned();
            if let Some(alias) = &alias {
                kms.create_alias()
                    .alias_name(alias)
                    .target_key_id(metadata.key_id())
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "KMS CreateAlias: {}",
                            aws_sdk_kms::error::DisplayErrorContext(e)
                        )
                    })?;
            }
            arn
        }
    };
    let public = kms
        .get_public_key()
        .key_id(&arn)
        .send()
        .await
        .map_err(|e| {
            format!(
                "KMS GetPublicKey: {}",
                aws_sdk_kms::error::DisplayErrorContext(e)
            )
        })?;
    let der = public
        .public_key()
        .ok_or("KMS GetPublicKey answered no key")?;
    let key = zx_auth::PublicKey::from_spki_der(der.as_ref())?;
    Ok(format!(
        "{arn}
{}",
        key.encoded()
    ))
}

async fn migrate() -> Outcome {
    let config = Config::from_env()?;
    let url = config
        .database_url
        .as_ref()
        .ok_or("DATABASE_URL is required for migrate")?;
    let mut report = Vec::new();
    for (schema, set) in [
        (&config.users_schema, zx_store_postgres::migrate::USERS),
        (
            &config.products_schema,
            zx_store_postgres::migrate::PRODUCTS,
        ),
        (&config.orders_schema, zx_store_postgres::migrate::ORDERS),
    ] {
        let pool = admin_pool(&config, url.expose()).await?;
        let applied = zx_store_postgres::migrate(&pool, schema, &set).await?;
        report.push(format!(
            "schema {schema} ({}): applied migrations {applied:?}",
            set.service
        ));
        if set.service == "users" {
            // Usernames are unique by a key computed in Rust (migration 4 set lower()).
            let users = zx_store_postgres::PgUserRepository::new(pool.clone(), schema);
            let (rekeyed, clashes) = users.rekey_usernames().await?;
            report.push(format!("usernames re-keyed: {rekeyed}"));
            if !clashes.is_empty() {
                report.push(format!(
                    "look-alike usernames left with their old key (rename one of each): {clashes:?}"
                ));
            }
        }
        pool.close().await;
    }
    Ok(report.join("\n"))
}

/// A pool for an operator command: with `DATABASE_IAM_AUTH=true`, its password is a token
/// signed with the default credential chain (the proxy requires IAM authentication).
async fn admin_pool(
    config: &Config,
    url: &str,
) -> Result<sqlx::PgPool, Box<dyn std::error::Error>> {
    let mut options = zx_store_postgres::connect_options(url)?;
    if config.database_iam_auth {
        use aws_credential_types::provider::ProvideCredentials;
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let credentials = aws
            .credentials_provider()
            .ok_or("DATABASE_IAM_AUTH needs AWS credentials")?
            .provide_credentials()
            .await?;
        let region = aws
            .region()
            .map(|r| r.as_ref().to_owned())
            .unwrap_or_default();
        let token = zx_app::rds_iam::auth_token(
            &credentials,
            &region,
            options.get_host(),
            options.get_port(),
            options.get_username(),
            std::time::SystemTime::now(),
        )?;
        options = options.password(&token);
    }
    Ok(zx_store_postgres::connect_lazy_with(options, &config.pool))
}

async fn outbox(resend: Option<&str>) -> Outcome {
    let config = Config::from_env()?;
    let services = Services::build(&config).await?;
    let outbox = services.outbox()?;
    Ok(match resend {
        None => zx_app::admin::parked_outbox(&*outbox).await?,
        Some(key) => zx_app::admin::resend_parked(&*outbox, key)
            .await
            .map_err(|e| format!("no parked row {key}: {e}"))?,
    })
}

async fn ensure_admin(email: &str, username: &str) -> Outcome {
    let config = Config::from_env()?;
    let services = Services::build(&config).await?;
    let email = Email::parse(email).map_err(|e| format!("email {e}"))?;
    let username = Username::parse(username).map_err(|e| format!("username {e}"))?;
    let password = std::env::var("ADMIN_PASSWORD").map_err(|_| "ADMIN_PASSWORD is required")?;
    let password = Password::parse(&password).map_err(|e| format!("ADMIN_PASSWORD {e}"))?;
    let hash = services.hasher.hash(&password).await?;
    let users = &services.users()?;
    match users.find_by_email(&email).await? {
        Some(current) => {
            let mut next = current.next_version();
            next.role = Role::Admin;
            next.password_hash = hash;
            users.update(&current, &next).await?;
            Ok(format!("{email} is an admin (user {})", next.id))
        }
        None => {
            let user = User::new(username, email.clone(), hash, Role::Admin);
            users.create(&user).await?;
            Ok(format!("{email} created as an admin (user {})", user.id))
        }
    }
}

/// A demo category: (category, product names, description, price range in fen).
type DemoCategory = (
    &'static str,
    &'static [&'static str],
    &'static str,
    (i64, i64),
);

const DEMO_CATEGORIES: &[DemoCategory] = &[
    (
        "phones",
        &["Phone", "手机", "Phone Pro", "Phone Lite", "Phone Max"],
        "5G smartphone with an OLED display",
        (99_900, 999_900),
    ),
    (
        "laptops",
        &["Laptop", "笔记本电脑", "Ultrabook", "Laptop Air"],
        "thin and light, all-day battery",
        (399_900, 1_599_900),
    ),
    (
        "audio",
        &["Earbuds", "降噪耳机", "Speaker", "Headphones"],
        "wireless, active noise cancelling",
        (9_900, 299_900),
    ),
    (
        "home",
        &["Desk Lamp", "空气净化器", "Robot Vacuum", "Smart Plug"],
        "for a smarter home",
        (4_900, 399_900),
    ),
    (
        "kitchen",
        &["Kettle", "电饭煲", "Coffee Grinder", "Air Fryer"],
        "stainless steel, easy to clean",
        (5_900, 129_900),
    ),
    (
        "books",
        &["Cookbook", "小说", "Travel Guide", "Programming in Rust"],
        "paperback, 2026 edition",
        (2_900, 19_900),
    ),
    (
        "clothing",
        &["T-Shirt", "羽绒服", "Sneakers", "Rain Jacket"],
        "breathable cotton blend",
        (3_900, 89_900),
    ),
    (
        "sports",
        &["Yoga Mat", "跑步鞋", "Dumbbells", "Bike Helmet"],
        "for training at home or outdoors",
        (4_900, 159_900),
    ),
];

/// The `i`th demo product, the same every time (fixed id, fixed creation time in the past).
fn demo_product(i: usize) -> Result<zx_domain::Product, String> {
    use zx_domain::{
        CategoryId, Description, ImageUrl, Price, Product, ProductId, ProductName, Stock, Timestamp,
    };
    let (category, names, description, (low, high)) = DEMO_CATEGORIES[i % DEMO_CATEGORIES.len()];
    let name = names[(i / DEMO_CATEGORIES.len()) % names.len()];
    let edition = i / (DEMO_CATEGORIES.len() * names.len()) + 1;
    let steps = (high - low) / 100;
    let price = low + ((i as i64 * 7_919) % steps.max(1)) * 100;
    // Ten minutes apart, ending a day before 2026-11-24: newest first is a stable order.
    let created =
        Timestamp::from_unix_millis(1_795_420_800_000 - 86_400_000 - (i as i64) * 600_000)
            .ok_or("timestamp out of range")?;
    Ok(Product {
        id: ProductId::parse(&format!("0192f0c4-0000-7000-8000-{i:012x}"))?,
        name: ProductName::parse(&format!("智选 {name} {edition}"))?,
        description: Description::parse(&format!("{description}. Demo item #{i}."))?,
        price: Price::from_minor(price)?,
        category: CategoryId::parse(category)?,
        images: vec![ImageUrl::parse(&format!(
            "https://img.zhixuan.local/{category}/{i}.jpg"
        ))?],
        stock: Stock {
            available: (i as i64 * 37) % 200,
            reserved: 0,
        },
        created_at: created,
        updated_at: created,
        deleted_at: None,
        version: 1,
    })
}

/// Rebuilds the category counters of a DynamoDB catalogue from its live products (`GET
/// /categories`): once for products created before the counters, or after one went wrong.
async fn recount_categories() -> Outcome {
    let config = Config::from_env()?;
    if config.store != zx_app::StoreKind::DynamoDb {
        return Ok("nothing to do: Postgres counts categories from the products table".into());
    }
    let aws = zx_app::backend::aws_config().await;
    let products = zx_store_dynamodb::DynamoProductRepository::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.products_table.clone(),
    );
    let counts = products.recount_categories().await?;
    let total: u64 = counts.iter().map(|c| c.products).sum();
    Ok(format!(
        "category counters rebuilt: {} categories, {total} live products (cached answers expire within CACHE_TTL_SECONDS)",
        counts.len()
    ))
}

async fn seed_catalogue(count: usize) -> Outcome {
    let config = Config::from_env()?;
    let services = Services::build(&config).await?;
    let products = &services.products()?;
    let mut last = None;
    for i in 0..count {
        let product = demo_product(i)?;
        // Fixed ids and times: creating a seeded product again succeeds and changes nothing.
        products.create_product(&product).await?;
        last = Some(product.id);
    }
    if let (Some(cache), Some(id)) = (services.catalogue_cache(), last) {
        // New products must show in cached listings at once.
        cache.invalidate_catalogue(&id).await;
    }
    Ok(format!("demo catalogue: {count} products in place"))
}
