//! Test support: isolated backends (a DynamoDB table and a Postgres schema of their own per
//! test), services wired like the functions, and the local gateway on a free port.
//!
//! Endpoints come from the environment `scripts/stack.sh env` prints, with the local defaults.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use zx_app::config::Source;
use zx_app::{Config, Services};
use zx_domain::{ProductRepository, UserRepository};
use zx_local_gateway::{Functions, Gateway, Pollers, RouteTable, Workers, sources_from_template};
use zx_store_dynamodb::{DynamoProductRepository, DynamoUserRepository, TableSpec};
use zx_store_postgres::{PgProductRepository, PgSchema, PgUserRepository, PoolSettings};

pub mod faults;

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

pub fn aws_endpoint() -> String {
    env_or("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
}

pub fn database_url() -> String {
    env_or("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/zhixuan")
}

pub fn cache_url() -> String {
    env_or("CACHE_URL", "redis://127.0.0.1:6379")
}

/// The repository root (for template.yaml, events/, localstack/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A short unique token for names: tests never see each other's data.
pub fn unique() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// AWS configuration pointing at `endpoint` with test credentials.
pub async fn aws_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await
}

/// A users table of its own, created from `localstack/dynamodb/users.json`.
pub async fn create_users_table(client: &aws_sdk_dynamodb::Client) -> String {
    create_table(client, "users").await
}

/// A table of its own, created from `localstack/dynamodb/<service>.json`.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, service: &str) -> String {
    let path = repo_root().join(format!("localstack/dynamodb/{service}.json"));
    let json = std::fs::read_to_string(&path).expect("table definition");
    let spec = TableSpec::from_json(&json).expect("valid table spec");
    let name = format!("zx-test-{}-{service}", unique());
    zx_store_dynamodb::create_table(client, &spec, &name)
        .await
        .expect("create table");
    name
}

/// A migrated users schema of its own.
pub async fn create_users_schema() -> (PgSchema, sqlx::PgPool) {
    create_schema(&zx_store_postgres::migrate::USERS).await
}

/// A Postgres schema of its own with `set`'s migrations applied.
pub async fn create_schema(set: &zx_store_postgres::MigrationSet) -> (PgSchema, sqlx::PgPool) {
    let schema = PgSchema::parse(&format!("t_{}", unique())).expect("schema name");
    let pool = zx_store_postgres::connect_lazy(
        &database_url(),
        &PoolSettings {
            max_connections: 5,
            ..PoolSettings::default()
        },
    )
    .expect("pool");
    zx_store_postgres::migrate(&pool, &schema, set)
        .await
        .expect("migrate");
    (schema, pool)
}

/// An isolated catalogue (products table or schema), removed by [`ProductBackend::cleanup`].
pub struct ProductBackend {
    pub products: Arc<dyn ProductRepository>,
    cleanup: Cleanup,
}

impl ProductBackend {
    pub async fn dynamodb() -> Self {
        Self::dynamodb_with(|config| config).await
    }

    /// On DynamoDB, with a client configured further by `configure` (an interceptor, say).
    pub async fn dynamodb_with(
        configure: impl FnOnce(aws_sdk_dynamodb::config::Builder) -> aws_sdk_dynamodb::config::Builder,
    ) -> Self {
        let aws = aws_config_for(&aws_endpoint()).await;
        let client = aws_sdk_dynamodb::Client::from_conf(
            configure(aws_sdk_dynamodb::config::Builder::from(&aws)).build(),
        );
        let table = create_table(&client, "products").await;
        Self {
            products: Arc::new(DynamoProductRepository::new(client.clone(), table.clone())),
            cleanup: Cleanup::Table(client, table),
        }
    }

    pub async fn postgres() -> Self {
        let (schema, pool) = create_schema(&zx_store_postgres::migrate::PRODUCTS).await;
        Self {
            products: Arc::new(PgProductRepository::new(pool.clone(), &schema)),
            cleanup: Cleanup::Schema(pool, schema),
        }
    }

    pub async fn cleanup(self) {
        self.cleanup.run().await;
    }
}

/// The repositories the orders saga uses, of one backend.
#[derive(Clone)]
pub struct OrderStores {
    pub orders: Arc<dyn zx_domain::OrderRepository>,
    pub outbox: Arc<dyn zx_domain::Outbox>,
    pub products: Arc<dyn ProductRepository>,
    pub inventory: Arc<dyn zx_domain::InventoryRepository>,
    /// The same orders storage, written past the adapter (to plant what it never writes).
    pub raw: RawOrders,
}

/// One backend's orders storage, reached past the adapter: tests plant rows the code would
/// never write (a corrupt outbox row, a corrupt order), as a bad deploy or a hand edit might.
#[derive(Clone)]
pub enum RawOrders {
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
    Postgres {
        pool: sqlx::PgPool,
        schema: PgSchema,
    },
}

impl RawOrders {
    /// Stores an outbox row created at `created_at` that cannot be read (an unknown destination,
    /// an order id that is not one, a body that is not JSON).
    pub async fn plant_unreadable_outbox_row(&self, created_at: zx_domain::Timestamp) {
        use aws_sdk_dynamodb::types::AttributeValue::S;
        let id = format!("bad-{}", unique());
        match self {
            Self::Dynamo { client, table } => {
                client
                    .put_item()
                    .table_name(table)
                    .item("pk", S("OUTBOX#03".into()))
                    .item(
                        "sk",
                        S(format!("{:013}#{id}", created_at.unix_millis().max(0))),
                    )
                    .item("messageId", S(id))
                    .item("orderId", S("not-an-order".into()))
                    .item("destination", S("nowhere".into()))
                    .item("body", S("{".into()))
                    .item("createdAt", S(created_at.to_rfc3339()))
                    .send()
                    .await
                    .expect("plant an outbox row");
            }
            Self::Postgres { pool, schema } => {
                sqlx::query(&format!(
                    "insert into \"{schema}\".outbox (message_id, order_id, destination, body, created_at)
                     values ($1, 'not-an-order', 'nowhere', '{{', $2)"
                ))
                .bind(id)
                .bind(created_at.as_datetime())
                .execute(pool)
                .await
                .expect("plant an outbox row");
            }
        }
    }

    /// Makes the stored order `id` unreadable (its lines no longer parse).
    pub async fn corrupt_order(&self, id: &zx_domain::OrderId) {
        match self {
            Self::Dynamo { client, table } => {
                client
                    .update_item()
                    .table_name(table)
                    .key(
                        "pk",
                        aws_sdk_dynamodb::types::AttributeValue::S(format!("ORDER#{id}")),
                    )
                    .key(
                        "sk",
                        aws_sdk_dynamodb::types::AttributeValue::S("ORDER".into()),
                    )
                    .update_expression("SET #l = :l")
                    .expression_attribute_names("#l", "lines")
                    .expression_attribute_values(
                        ":l",
                        aws_sdk_dynamodb::types::AttributeValue::S("{not json".into()),
                    )
                    .send()
                    .await
                    .expect("corrupt an order");
            }
            Self::Postgres { pool, schema } => {
                sqlx::query(&format!(
                    "update \"{schema}\".orders set lines = '{{not json' where order_id = $1"
                ))
                .bind(id.as_str())
                .execute(pool)
                .await
                .expect("corrupt an order");
            }
        }
    }
}

/// Isolated orders and catalogue storage (tables or schemas), removed by
/// [`OrderBackend::cleanup`].
pub struct OrderBackend {
    pub stores: OrderStores,
    cleanup: Vec<Cleanup>,
}

impl OrderBackend {
    pub async fn dynamodb() -> Self {
        let client = aws_sdk_dynamodb::Client::new(&aws_config_for(&aws_endpoint()).await);
        let products_table = create_table(&client, "products").await;
        let orders_table = create_table(&client, "orders").await;
        let products = Arc::new(DynamoProductRepository::new(
            client.clone(),
            products_table.clone(),
        ));
        let orders = Arc::new(zx_store_dynamodb::DynamoOrderRepository::new(
            client.clone(),
            orders_table.clone(),
        ));
        Self {
            stores: OrderStores {
                orders: orders.clone(),
                outbox: orders,
                products: products.clone(),
                inventory: products,
                raw: RawOrders::Dynamo {
                    client: client.clone(),
                    table: orders_table.clone(),
                },
            },
            cleanup: vec![
                Cleanup::Table(client.clone(), products_table),
                Cleanup::Table(client, orders_table),
            ],
        }
    }

    pub async fn postgres() -> Self {
        let (products_schema, products_pool) =
            create_schema(&zx_store_postgres::migrate::PRODUCTS).await;
        let (orders_schema, orders_pool) = create_schema(&zx_store_postgres::migrate::ORDERS).await;
        let products = Arc::new(PgProductRepository::new(
            products_pool.clone(),
            &products_schema,
        ));
        let orders = Arc::new(zx_store_postgres::PgOrderRepository::new(
            orders_pool.clone(),
            &orders_schema,
        ));
        Self {
            stores: OrderStores {
                orders: orders.clone(),
                outbox: orders,
                products: products.clone(),
                inventory: products,
                raw: RawOrders::Postgres {
                    pool: orders_pool.clone(),
                    schema: orders_schema.clone(),
                },
            },
            cleanup: vec![
                Cleanup::Schema(products_pool, products_schema),
                Cleanup::Schema(orders_pool, orders_schema),
            ],
        }
    }

    pub async fn cleanup(self) {
        for cleanup in self.cleanup {
            cleanup.run().await;
        }
    }
}

/// One isolated repository backend, removed by [`Backend::cleanup`].
pub struct Backend {
    pub users: Arc<dyn UserRepository>,
    /// The same store's users and its sessions.
    pub sessions: SessionStores,
    cleanup: Cleanup,
}

/// Users and sessions of one backend (a session's rotation checks its user).
#[derive(Clone)]
pub struct SessionStores {
    pub users: Arc<dyn UserRepository>,
    pub sessions: Arc<dyn zx_domain::SessionRepository>,
}

enum Cleanup {
    Table(aws_sdk_dynamodb::Client, String),
    Schema(sqlx::PgPool, PgSchema),
}

impl Backend {
    pub async fn dynamodb() -> Self {
        let client = aws_sdk_dynamodb::Client::new(&aws_config_for(&aws_endpoint()).await);
        let table = create_users_table(&client).await;
        let users: Arc<dyn UserRepository> =
            Arc::new(DynamoUserRepository::new(client.clone(), table.clone()));
        let sessions = Arc::new(zx_store_dynamodb::DynamoSessionRepository::new(
            client.clone(),
            table.clone(),
        ));
        Self {
            sessions: SessionStores {
                users: users.clone(),
                sessions,
            },
            users,
            cleanup: Cleanup::Table(client, table),
        }
    }

    pub async fn postgres() -> Self {
        let (schema, pool) = create_users_schema().await;
        let users: Arc<dyn UserRepository> = Arc::new(PgUserRepository::new(pool.clone(), &schema));
        let sessions = Arc::new(zx_store_postgres::PgSessionRepository::new(
            pool.clone(),
            &schema,
        ));
        Self {
            sessions: SessionStores {
                users: users.clone(),
                sessions,
            },
            users,
            cleanup: Cleanup::Schema(pool, schema),
        }
    }

    /// Drops the table or schema (best effort: a leftover never affects another run).
    pub async fn cleanup(self) {
        self.cleanup.run().await;
    }
}

impl Cleanup {
    async fn run(self) {
        match self {
            Cleanup::Table(client, table) => {
                let _ = client.delete_table().table_name(table).send().await;
            }
            Cleanup::Schema(pool, schema) => {
                let _ = sqlx::raw_sql(&format!("drop schema if exists \"{schema}\" cascade"))
                    .execute(&pool)
                    .await;
                pool.close().await;
            }
        }
    }
}

/// Which store a test app uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    DynamoDb,
    Postgres,
}

/// The test token key pair (random per process).
pub fn signing_key() -> &'static zx_auth::SigningKey {
    static KEY: std::sync::OnceLock<zx_auth::SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| zx_auth::SigningKey::generate().expect("Ed25519 key"))
}

/// The next `count` JSON messages of the SQS queue `url` (in any order), each deleted once
/// read; panics after `within`.
pub async fn receive_json(
    aws: &aws_config::SdkConfig,
    url: &str,
    count: usize,
    within: std::time::Duration,
) -> Vec<serde_json::Value> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let deadline = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    while seen.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "messages of {url} so far: {seen:?}"
        );
        let received = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in received.messages.unwrap_or_default() {
            seen.push(serde_json::from_str(message.body().unwrap_or_default()).expect("JSON"));
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("delete");
        }
    }
    seen
}

/// Services wired as the functions wire them, on isolated storage.
pub struct TestApp {
    pub services: Services,
    pub config: Config,
    pub table: Option<String>,
    pub schema: Option<PgSchema>,
    pub queues: TestQueues,
    pub aws: aws_config::SdkConfig,
}

/// Queues and a topic of one test app: the inventory and order queues with their dead-letter
/// queues (redrive after 5 receives; visibility 2 s, so redeliveries come quickly), and the
/// order-events topic with a queue subscribed.
#[derive(Debug, Clone)]
pub struct TestQueues {
    pub inventory: String,
    pub inventory_dlq: String,
    pub orders: String,
    pub orders_dlq: String,
    pub topic: String,
    pub events: String,
    /// The account-notices topic, and a queue subscribed to it (the mailer's inbox).
    pub notices_topic: String,
    pub notices: String,
}

/// Visibility timeout of test queues.
pub const TEST_VISIBILITY_SECONDS: u32 = 2;

/// Receives before a message of a [`TestApp::through`] app reaches its dead-letter queue: with
/// the 2 s visibility, a 60 s retry window, so that, as deployed (70 s × 5 receives, about six
/// minutes), a message outlives every fault of the fault set instead of being dead-lettered by
/// the shortened visibility.
pub const FAULT_MAX_RECEIVES: u32 = 30;

impl TestQueues {
    pub async fn create(aws: &aws_config::SdkConfig) -> Self {
        Self::create_with(aws, 5).await
    }

    /// Queues whose messages reach their dead-letter queue after `max_receives` receives.
    pub async fn create_with(aws: &aws_config::SdkConfig, max_receives: u32) -> Self {
        let sqs = aws_sdk_sqs::Client::new(aws);
        let sns = aws_sdk_sns::Client::new(aws);
        let prefix = format!("zx-test-{}", unique());
        let arn = |url: &str| {
            format!(
                "arn:aws:sqs:us-east-1:000000000000:{}",
                url.rsplit('/').next().unwrap_or_default()
            )
        };
        let mut urls = Vec::new();
        for name in ["inventory", "orders"] {
            let dlq = sqs
                .create_queue()
                .queue_name(format!("{prefix}-{name}-dlq"))
                .send()
                .await
                .expect("create dlq")
                .queue_url
                .expect("dlq url");
            let redrive = serde_json::json!({"deadLetterTargetArn": arn(&dlq), "maxReceiveCount": max_receives.to_string()});
            let queue = sqs
                .create_queue()
                .queue_name(format!("{prefix}-{name}"))
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                    redrive.to_string(),
                )
                .attributes(
                    aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                    TEST_VISIBILITY_SECONDS.to_string(),
                )
                .send()
                .await
                .expect("create queue")
                .queue_url
                .expect("queue url");
            urls.push((queue, dlq));
        }
        let mut subscribed = Vec::new();
        for name in ["order-events", "account-notices"] {
            let topic = sns
                .create_topic()
                .name(format!("{prefix}-{name}"))
                .send()
                .await
                .expect("create topic")
                .topic_arn
                .expect("topic arn");
            let queue = sqs
                .create_queue()
                .queue_name(format!("{prefix}-{name}"))
                .send()
                .await
                .expect("create subscriber queue")
                .queue_url
                .expect("subscriber url");
            sns.subscribe()
                .topic_arn(&topic)
                .protocol("sqs")
                .endpoint(arn(&queue))
                .attributes("RawMessageDelivery", "true")
                .send()
                .await
                .expect("subscribe");
            subscribed.push((topic, queue));
        }
        let [(topic, events), (notices_topic, notices)] =
            <[(String, String); 2]>::try_from(subscribed).expect("two topics");
        let [(inventory, inventory_dlq), (orders, orders_dlq)] =
            <[(String, String); 2]>::try_from(urls).expect("two queues");
        Self {
            inventory,
            inventory_dlq,
            orders,
            orders_dlq,
            topic,
            events,
            notices_topic,
            notices,
        }
    }

    fn unreachable(endpoint: &str) -> Self {
        let url = |name: &str| format!("{endpoint}/queue/us-east-1/000000000000/{name}");
        Self {
            inventory: url("inventory"),
            inventory_dlq: url("inventory-dlq"),
            orders: url("orders"),
            orders_dlq: url("orders-dlq"),
            topic: "arn:aws:sns:us-east-1:000000000000:unreachable".into(),
            events: url("events"),
            notices_topic: "arn:aws:sns:us-east-1:000000000000:unreachable-notices".into(),
            notices: url("notices"),
        }
    }
}

impl TestApp {
    pub async fn new(store: Store) -> Self {
        Self::with(store, &aws_endpoint(), &[]).await
    }

    /// `extra` overrides or adds configuration variables.
    pub async fn with(store: Store, aws_endpoint: &str, extra: &[(&str, &str)]) -> Self {
        Self::build(store, aws_endpoint, aws_endpoint, extra, 5).await
    }

    /// An app whose tables, schemas and queues are made directly, but whose functions, workers
    /// and tests reach AWS through `aws_endpoint` (a [`FaultProxy`] in front of LocalStack);
    /// `extra` can point `CACHE_URL` and `DATABASE_URL` at proxies too.
    pub async fn through(store: Store, aws_endpoint: &str, extra: &[(&str, &str)]) -> Self {
        Self::build(
            store,
            &self::aws_endpoint(),
            aws_endpoint,
            extra,
            FAULT_MAX_RECEIVES,
        )
        .await
    }

    async fn build(
        store: Store,
        create_on: &str,
        aws_endpoint: &str,
        extra: &[(&str, &str)],
        max_receives: u32,
    ) -> Self {
        let aws = aws_config_for(create_on).await;
        let mut vars: HashMap<String, String> = HashMap::from([
            ("JWT_PRIVATE_KEY".into(), signing_key().to_base64()),
            (
                "JWT_PUBLIC_KEYS".into(),
                signing_key().public_key().encoded().to_owned(),
            ),
            ("BCRYPT_COST".into(), "4".into()),
            ("CACHE_URL".into(), cache_url()),
            ("CACHE_KEY_PREFIX".into(), format!("zx-test-{}:", unique())),
            // DynamoDB Local's indexes never lag; tests that need a lag window set their own.
            ("CACHE_INDEX_LAG_MS".into(), "1".into()),
        ]);
        let (mut table, mut schema) = (None, None);
        let reachable = create_on == self::aws_endpoint();
        let queues = if reachable {
            TestQueues::create_with(&aws, max_receives).await
        } else {
            TestQueues::unreachable(aws_endpoint)
        };
        vars.insert("INVENTORY_QUEUE_URL".into(), queues.inventory.clone());
        vars.insert("ORDER_QUEUE_URL".into(), queues.orders.clone());
        vars.insert("INVENTORY_DLQ_URL".into(), queues.inventory_dlq.clone());
        vars.insert("ORDER_DLQ_URL".into(), queues.orders_dlq.clone());
        vars.insert("ORDER_EVENTS_TOPIC_ARN".into(), queues.topic.clone());
        vars.insert(
            "ACCOUNT_NOTICES_TOPIC_ARN".into(),
            queues.notices_topic.clone(),
        );
        vars.insert("OUTBOX_RELAY_DELAY_MS".into(), "1".into());
        match store {
            Store::DynamoDb => {
                let client = aws_sdk_dynamodb::Client::new(&aws);
                let (users, products, orders) = if reachable {
                    (
                        create_table(&client, "users").await,
                        create_table(&client, "products").await,
                        create_table(&client, "orders").await,
                    )
                } else {
                    (
                        "unreachable-users".to_owned(),
                        "unreachable-products".to_owned(),
                        "unreachable-orders".to_owned(),
                    )
                };
                vars.insert("STORE".into(), "dynamodb".into());
                vars.insert("USERS_TABLE".into(), users.clone());
                vars.insert("PRODUCTS_TABLE".into(), products);
                vars.insert("ORDERS_TABLE".into(), orders);
                table = Some(users);
            }
            Store::Postgres => {
                let (users, pool) = create_users_schema().await;
                pool.close().await;
                let (products, pool) = create_schema(&zx_store_postgres::migrate::PRODUCTS).await;
                pool.close().await;
                let (orders, pool) = create_schema(&zx_store_postgres::migrate::ORDERS).await;
                pool.close().await;
                vars.insert("STORE".into(), "postgres".into());
                vars.insert("DATABASE_URL".into(), database_url());
                vars.insert("USERS_SCHEMA".into(), users.to_string());
                vars.insert("PRODUCTS_SCHEMA".into(), products.to_string());
                vars.insert("ORDERS_SCHEMA".into(), orders.to_string());
                schema = Some(users);
            }
        }
        for (key, value) in extra {
            vars.insert((*key).into(), (*value).into());
        }
        // Signing in KMS replaces the in-memory test key.
        if vars.contains_key("JWT_SIGNING_KEY_ID") {
            vars.remove("JWT_PRIVATE_KEY");
        }
        let config = Config::from_source(&Source::map(vars)).expect("test config");
        let aws = aws_config_for(aws_endpoint).await;
        let services = Services::build_with_aws(&config, &aws)
            .await
            .expect("services");
        Self {
            services,
            config,
            table,
            schema,
            queues,
            aws,
        }
    }

    /// This app's orders storage, reached past the adapter.
    pub fn raw_orders(&self) -> RawOrders {
        match self.config.store {
            zx_app::StoreKind::DynamoDb => RawOrders::Dynamo {
                client: aws_sdk_dynamodb::Client::new(&self.aws),
                table: self.config.orders_table.clone(),
            },
            _ => RawOrders::Postgres {
                pool: sqlx::PgPool::connect_lazy(&database_url()).expect("pool"),
                schema: self.config.orders_schema.clone(),
            },
        }
    }

    /// Runs `sql` on this app's Postgres database, `{products}` and `{orders}` replaced by
    /// its schemas; returns the rows it touched (or, for a `select count(*)`, the count).
    pub async fn pg(&self, sql: &str) -> i64 {
        let sql = sql
            .replace(
                "{products}",
                &format!("\"{}\"", self.config.products_schema.as_str()),
            )
            .replace(
                "{orders}",
                &format!("\"{}\"", self.config.orders_schema.as_str()),
            );
        let pool = sqlx::PgPool::connect(&database_url()).await.expect("pool");
        let result = if sql.trim_start().starts_with("select") {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&pool)
                .await
                .expect("count")
        } else {
            i64::try_from(
                sqlx::query(&sql)
                    .execute(&pool)
                    .await
                    .expect("statement")
                    .rows_affected(),
            )
            .expect("rows")
        };
        pool.close().await;
        result
    }

    /// The DynamoDB item with this key in the app's products table (`sk` absent) or orders
    /// table (`sk` given).
    pub async fn dynamo_item(
        &self,
        pk: &str,
        sk: Option<&str>,
    ) -> Option<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
        use aws_sdk_dynamodb::types::AttributeValue;
        let client = aws_sdk_dynamodb::Client::new(&self.aws);
        let mut get = client
            .get_item()
            .consistent_read(true)
            .key("pk", AttributeValue::S(pk.to_owned()));
        get = match sk {
            Some(sk) => get
                .table_name(&self.config.orders_table)
                .key("sk", AttributeValue::S(sk.to_owned())),
            None => get.table_name(&self.config.products_table),
        };
        get.send().await.expect("GetItem").item
    }

    /// The workers and the relay of this app, built as at their cold starts.
    pub fn workers(&self) -> Workers {
        Workers::new(&self.services).expect("every worker starts")
    }

    /// Polls this app's queues for the workers named in `functions` (all when empty), as the
    /// template's event source mappings do; stops when dropped. The relay is left to the test.
    pub fn start_pollers(&self, workers: &Workers, functions: &[&str]) -> Pollers {
        let template =
            std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
        let (queues, _) = sources_from_template(&template).expect("event sources");
        let queues: Vec<_> = queues
            .into_iter()
            .filter(|q| functions.is_empty() || functions.contains(&q.function.as_str()))
            .collect();
        Pollers::start(
            workers,
            &self.services,
            aws_sdk_sqs::Client::new(&self.aws),
            &queues,
            &[],
        )
        .expect("pollers")
    }

    /// Starts the local gateway for this app on a free port and returns its base URL.
    pub async fn gateway(&self) -> String {
        let template =
            std::fs::read_to_string(repo_root().join("template.yaml")).expect("template.yaml");
        // The template names no origins; a deployment (and this test gateway) names its own.
        let routes = RouteTable::from_template(&template)
            .expect("routes")
            .with_allowed_origins(vec!["https://localhost:3000".to_owned()]);
        let functions = Functions::new(&self.services).expect("every function starts");
        let gateway = Arc::new(Gateway::new(routes, functions).expect("gateway"));
        let (addr, _task) = gateway
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        format!("http://{addr}")
    }
}

impl TestApp {
    /// A user with `role` stored now (a unique name, a fixed password hash: it never logs in)
    /// and an access token of a session of its own.
    pub async fn stored_user_token(&self, role: zx_domain::Role) -> (zx_domain::UserId, String) {
        let id = zx_domain::UserId::generate();
        let simple: String = id.as_str().chars().filter(|c| *c != '-').collect();
        let tail = &simple[simple.len() - 31..];
        let user = zx_domain::User {
            id: id.clone(),
            ..zx_domain::User::new(
                zx_domain::Username::parse(&format!("u{tail}")).expect("username"),
                zx_domain::Email::parse(&format!("u{tail}@example.com")).expect("email"),
                zx_domain::PasswordHash::from_stored(format!("$2b$04${}", "a".repeat(53)))
                    .expect("hash"),
                role,
            )
        };
        self.services
            .users()
            .expect("users")
            .create(&user)
            .await
            .expect("user stored");
        (id, self.session_token(&user).await)
    }

    /// An access token for `user` (already stored) in a session stored for it now, signed with
    /// the test key: what a login would give, without a password or the cache.
    pub async fn session_token(&self, user: &zx_domain::User) -> String {
        let now = zx_domain::Timestamp::now();
        let session = zx_domain::Session {
            id: zx_domain::SessionId::generate(),
            user_id: user.id.clone(),
            token_hash: zx_domain::TokenHash::from_hex(&"ab".repeat(32)).expect("hash"),
            user_epoch: user.session_epoch,
            created_at: now,
            expires_at: now.plus(std::time::Duration::from_secs(3600)),
            revoked: false,
            used_hashes: Vec::new(),
        };
        self.services
            .sessions()
            .expect("sessions")
            .create_session(&session)
            .await
            .expect("session stored");
        zx_auth::TokenIssuer::new(signing_key(), self.config.token.clone())
            .issue(user, &session.id)
            .await
            .expect("token")
            .token
    }
}

/// A live product for tests: one image, `available` units, created now, version 1.
pub fn sample_product(
    name: &str,
    description: &str,
    category: &str,
    price: i64,
    available: i64,
) -> zx_domain::Product {
    use zx_domain::{
        CategoryId, Description, ImageUrl, Price, Product, ProductId, ProductName, Stock, Timestamp,
    };
    let now = Timestamp::now();
    Product {
        id: ProductId::generate(),
        name: ProductName::parse(name).expect("test product name"),
        description: Description::parse(description).expect("test description"),
        price: Price::from_minor(price).expect("test price"),
        category: CategoryId::parse(category).expect("test category"),
        images: vec![ImageUrl::parse("https://img.example.com/a.jpg").expect("test image")],
        stock: Stock {
            available,
            reserved: 0,
        },
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    }
}

/// A catalogue whose listing index lags behind its table, like a DynamoDB GSI under load:
/// while frozen, listings show the frozen products as they were when frozen, in the listings
/// they were in then (reads by id stay current).
pub struct LaggingIndex {
    inner: Arc<dyn ProductRepository>,
    frozen: std::sync::Mutex<Option<HashMap<zx_domain::ProductId, zx_domain::Product>>>,
}

impl LaggingIndex {
    pub fn new(inner: Arc<dyn ProductRepository>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            frozen: std::sync::Mutex::new(None),
        })
    }

    /// From now on, listings show these products' current state, whatever is written later.
    pub async fn freeze(&self, ids: &[zx_domain::ProductId]) {
        let products = self.inner.find_products(ids).await.expect("snapshot");
        let snapshot = products.into_iter().map(|p| (p.id.clone(), p)).collect();
        *self.frozen.lock().expect("lock") = Some(snapshot);
    }

    /// The index has caught up.
    pub fn catch_up(&self) {
        *self.frozen.lock().expect("lock") = None;
    }
}

#[async_trait::async_trait]
impl zx_domain::ProductReader for LaggingIndex {
    async fn find_product(
        &self,
        id: &zx_domain::ProductId,
    ) -> Result<Option<zx_domain::Product>, zx_domain::RepositoryError> {
        self.inner.find_product(id).await
    }

    async fn find_products(
        &self,
        ids: &[zx_domain::ProductId],
    ) -> Result<Vec<zx_domain::Product>, zx_domain::RepositoryError> {
        self.inner.find_products(ids).await
    }

    async fn stock_records(
        &self,
        id: &zx_domain::ProductId,
    ) -> Result<Option<zx_domain::stock::StockRecords>, zx_domain::RepositoryError> {
        self.inner.stock_records(id).await
    }

    async fn list_products(
        &self,
        query: &zx_domain::ProductQuery,
    ) -> Result<zx_domain::Page<zx_domain::Product>, zx_domain::RepositoryError> {
        let mut page = self.inner.list_products(query).await?;
        if let Some(frozen) = self.frozen.lock().expect("lock").as_ref() {
            // Frozen products are listed as they were: where they matched then, with the
            // values they had then (first pages only: the cursor is not applied to them).
            page.items.retain(|item| !frozen.contains_key(&item.id));
            if query.after.is_none() {
                page.items
                    .extend(frozen.values().filter(|old| query.matches(old)).cloned());
            }
            page.items
                .sort_by(|a, b| (b.created_at, b.id.as_str()).cmp(&(a.created_at, a.id.as_str())));
            page.items.truncate(query.limit.get());
        }
        Ok(page)
    }
}

#[async_trait::async_trait]
impl zx_domain::ProductWriter for LaggingIndex {
    async fn create_product(
        &self,
        product: &zx_domain::Product,
    ) -> Result<(), zx_domain::RepositoryError> {
        self.inner.create_product(product).await
    }

    async fn update_product(
        &self,
        current: &zx_domain::Product,
        next: &zx_domain::Product,
    ) -> Result<(), zx_domain::RepositoryError> {
        self.inner.update_product(current, next).await
    }
}

#[async_trait::async_trait]
impl zx_domain::CategoryReader for LaggingIndex {
    async fn categories(
        &self,
    ) -> Result<Vec<zx_domain::CategoryCount>, zx_domain::RepositoryError> {
        self.inner.categories().await
    }
}

#[async_trait::async_trait]
impl zx_domain::StockWriter for LaggingIndex {
    async fn change_stock(
        &self,
        id: &zx_domain::ProductId,
        change: zx_domain::StockChange,
        change_id: &zx_domain::StockChangeId,
    ) -> Result<zx_domain::Stock, zx_domain::RepositoryError> {
        self.inner.change_stock(id, change, change_id).await
    }

    async fn set_stock_shards(
        &self,
        id: &zx_domain::ProductId,
        shards: u16,
    ) -> Result<zx_domain::stock::StockRecords, zx_domain::RepositoryError> {
        self.inner.set_stock_shards(id, shards).await
    }
}

/// What a [`FaultProxy`] does to the connections through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forwards everything.
    None,
    /// Down: every open connection is dropped, new ones are closed at once.
    Cut,
    /// Hung: nothing moves on open connections, new ones are accepted and never answered
    /// (until the fault ends, when they are closed).
    BlackHole,
    /// Every chunk, either way, waits this long before it is forwarded.
    Slow(std::time::Duration),
}

/// A TCP proxy in front of a dependency (the cache, LocalStack, Postgres) that a test drives:
/// [`FaultProxy::set`] a [`Fault`], or [`FaultProxy::reset`] every open connection (TCP RST, as
/// a crashed peer or a middlebox does, mid-transaction or not). Loopback only.
pub struct FaultProxy {
    pub address: SocketAddr,
    fault: tokio::sync::watch::Sender<Fault>,
    resets: tokio::sync::watch::Sender<u64>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port in front of `target` (`host:port`), forwarding.
    pub async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (fault, faults) = tokio::sync::watch::channel(Fault::None);
        let (resets, reset_count) = tokio::sync::watch::channel(0u64);
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut faults = faults.clone();
                let now = *faults.borrow_and_update();
                match now {
                    Fault::Cut => {
                        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        continue; // dropped: closed at once
                    }
                    Fault::BlackHole => {
                        // Held, never answered; closed when the fault ends.
                        tokio::spawn(async move {
                            let _held = client;
                            let _ = faults.wait_for(|f| *f != Fault::BlackHole).await;
                        });
                        continue;
                    }
                    Fault::None | Fault::Slow(_) => {}
                }
                let target = target.clone();
                let mut resets = reset_count.clone();
                resets.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, faults.clone(), resets.clone());
                    let down = pump(server_read, client_write, faults.clone(), resets);
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {}
                        _ = faults.wait_for(|f| *f == Fault::Cut) => {}
                    }
                });
            }
        });
        Self {
            address,
            fault,
            resets,
            refused,
            task,
        }
    }

    /// Applies `fault` from now on (to open connections as well as new ones).
    pub fn set(&self, fault: Fault) {
        self.fault.send_replace(fault);
    }

    /// Resets every open connection now; new ones pass.
    pub fn reset(&self) {
        self.resets.send_modify(|n| *n += 1);
    }

    /// Connections accepted and closed at once while cut, so far.
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies `from` to `to` chunk by chunk under the proxy's current fault; ends at either end's
/// close or error. On a reset both sockets are dropped with linger 0: their peers see a TCP
/// reset, not a close (see [`FaultProxy::reset`]).
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: tokio::sync::watch::Receiver<Fault>,
    mut resets: tokio::sync::watch::Receiver<u64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = resets.changed() => {
                let _ = from.as_ref().set_zero_linger();
                let _ = to.as_ref().set_zero_linger();
                // Not `shutdown` (a FIN first): the sockets close when both halves are gone.
                to.forget();
                return;
            }
        };
        let read = match read {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let fault = *faults.borrow_and_update();
        match fault {
            Fault::Slow(latency) => tokio::time::sleep(latency).await,
            Fault::BlackHole => {
                // Nothing moves until the fault ends (or the connection is cut).
                if faults.wait_for(|f| *f != Fault::BlackHole).await.is_err() {
                    break;
                }
            }
            Fault::None | Fault::Cut => {}
        }
        // Cut while this chunk was read (or held): it goes nowhere, the connection is dropped.
        if *faults.borrow() == Fault::Cut {
            break;
        }
        let Some(chunk) = buffer.get(..read) else {
            break;
        };
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP proxy in front of a server (the cache) that a test can cut: while cut, every open
/// connection is dropped and new ones are closed at once. A [`FaultProxy`] that only cuts.
pub struct CuttableProxy(FaultProxy);

impl CuttableProxy {
    pub async fn start(target: String) -> Self {
        Self(FaultProxy::start(target).await)
    }

    pub fn set_cut(&self, cut: bool) {
        self.0.set(if cut { Fault::Cut } else { Fault::None });
    }

    /// Connections accepted and closed at once while cut, so far.
    pub fn refused(&self) -> usize {
        self.0.refused()
    }
}

impl std::ops::Deref for CuttableProxy {
    type Target = FaultProxy;
    fn deref(&self) -> &FaultProxy {
        &self.0
    }
}

/// A server that accepts connections and never answers (a hung dependency): its address, and
/// the task holding the connections (abort it to stop).
pub async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind silent server");
    let address = listener.local_addr().expect("silent server address");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (address, task)
}

/// Messages in the queue at `url`, visible and in flight (`None` when it cannot be read).
pub async fn queue_depth(aws: &aws_config::SdkConfig, url: &str) -> Option<u64> {
    let attributes = aws_sdk_sqs::Client::new(aws)
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .ok()?
        .attributes?;
    Some(
        attributes
            .values()
            .map(|v| v.parse::<u64>().unwrap_or(0))
            .sum(),
    )
}

/// The log lines (JSON, as deployed) of this test process, captured from the moment
/// [`LogCapture::install`] runs. nextest runs each test in its own process, so a test sees only
/// its own logs.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Installs the capturing subscriber for the whole process (once; later calls get a capture
    /// that sees nothing).
    pub fn install() -> Self {
        let capture = Self::default();
        let writer = capture.clone();
        zx_http::telemetry::init_tracing_to(
            zx_http::telemetry::log_filter(Some("info")),
            move || writer.clone(),
        );
        capture
    }

    /// Every captured line, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// The captured lines at `level` (`"ERROR"`, `"WARN"`, ...) whose message contains `text`.
    pub fn matching(&self, level: &str, text: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l["level"] == level && l["message"].as_str().is_some_and(|m| m.contains(text))
            })
            .collect()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = self.0.lock() {
            buffer.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Stores an order of one line (2 units of `product`) for `user` under `id`, pending or
/// confirmed, as placing it would (with its idempotency record).
pub async fn store_order(
    orders: &Arc<dyn zx_domain::OrderRepository>,
    id: zx_domain::OrderId,
    user: &zx_domain::UserId,
    product: &zx_domain::Product,
    confirmed: bool,
) -> zx_domain::Order {
    store_order_of(orders, id, user, product, 2, confirmed).await
}

/// Splits a product's stock into `shards`.
pub async fn split_stock(app: &TestApp, product: &zx_domain::ProductId, shards: u16) {
    let records = app
        .services
        .products()
        .expect("products")
        .set_stock_shards(product, shards)
        .await
        .expect("split the stock");
    assert_eq!(records.active, shards);
}

/// Invokes an SQS function's handler as Lambda would (with the workers' 10 s timeout).
pub async fn invoke_sqs(
    handler: &zx_app::workers::SqsHandler,
    event: aws_lambda_events::sqs::SqsEvent,
) -> aws_lambda_events::sqs::SqsBatchResponse {
    handler(
        event,
        std::time::Instant::now() + zx_local_gateway::pollers::WORKER_TIMEOUT,
    )
    .await
}

/// Stores a pending (or, with `confirmed`, confirmed) order of `quantity` units of `product`
/// for `user`, with no messages.
pub async fn store_order_of(
    orders: &Arc<dyn zx_domain::OrderRepository>,
    id: zx_domain::OrderId,
    user: &zx_domain::UserId,
    product: &zx_domain::Product,
    quantity: u32,
    confirmed: bool,
) -> zx_domain::Order {
    use zx_domain::{IdempotencyKey, IdempotencyRecord, Order, OrderLine, OrderStatus, Timestamp};
    let now = Timestamp::now();
    let line = OrderLine {
        product_id: product.id.clone(),
        name: product.name.as_str().to_owned(),
        unit_price: product.price.minor(),
        quantity,
    };
    let order = Order::pending(id, user, vec![line], None, now).expect("a total that fits");
    let record = IdempotencyRecord {
        user_id: user.clone(),
        key: IdempotencyKey::parse(&unique()).expect("key"),
        fingerprint: "stored-by-test".into(),
        order_id: order.id.clone(),
        expires_at: Timestamp::from_unix_millis(now.unix_millis() + 3_600_000).expect("time"),
    };
    orders
        .create_order(&order, &record, &[], u32::MAX)
        .await
        .expect("store order");
    if !confirmed {
        return order;
    }
    let next = order
        .transitioned(OrderStatus::Confirmed, "system", None, Timestamp::now())
        .expect("pending -> confirmed");
    orders
        .update_order(&order, &next, &[])
        .await
        .expect("confirm order");
    next
}
