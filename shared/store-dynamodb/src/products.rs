//! Products on DynamoDB. One item per product under `pk = PRODUCT#<id>` (the catalogue: its stock
//! lives apart, in small records of its own, see [`crate::stock`]); two sparse GSIs serve
//! newest-first listings: `newest` (`gsi1pk = ALL`) and `category-newest`
//! (`gsi2pk = CAT#<category>`), both sorted by `<created millis, 13 digits>#<id>`. A soft delete
//! removes the GSI keys, so deleted products drop out of every listing. Price and search are
//! filters over the key-ordered query (`contains` on lower-cased copies: every character is
//! literal). GSI reads are eventually consistent on AWS (immediate in DynamoDB Local).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use zx_domain::stock::StockRecords;
use zx_domain::{
    CategoryCount, CategoryId, CategoryReader, Cursor, Description, ImageUrl, MAX_EXAMINED, Page,
    Price, Product, ProductId, ProductName, ProductQuery, ProductReader, ProductWriter,
    RepositoryError, Stock, Timestamp,
};

use crate::item::{Item, Strict, n, s};

/// Strict reads of catalogue items.
const PRODUCT: Strict = Strict("product");

mod attr {
    pub const PK: &str = "pk";
    pub const GSI1PK: &str = "gsi1pk";
    pub const GSI1SK: &str = "gsi1sk";
    pub const GSI2PK: &str = "gsi2pk";
    pub const GSI2SK: &str = "gsi2sk";
    pub const PRODUCT_ID: &str = "productId";
    pub const NAME: &str = "name";
    pub const NAME_LOWER: &str = "nameLower";
    pub const DESCRIPTION: &str = "description";
    pub const DESCRIPTION_LOWER: &str = "descriptionLower";
    pub const PRICE: &str = "price";
    pub const CATEGORY_ID: &str = "categoryId";
    pub const IMAGES: &str = "images";
    pub const CREATED_AT: &str = "createdAt";
    pub const UPDATED_AT: &str = "updatedAt";
    pub const DELETED_AT: &str = "deletedAt";
    pub const VERSION: &str = "version";
}

const NEWEST_INDEX: &str = "newest";
const CATEGORY_INDEX: &str = "category-newest";
const ALL_PRODUCTS: &str = "ALL";
/// Items read per Query call while filling a page.
const QUERY_BATCH: i32 = 100;

pub(crate) fn product_key(id: &ProductId) -> String {
    format!("PRODUCT#{id}")
}

/// The item of category counters: one number per category (`cat:<id>`), changed in the same
/// transaction as every catalogue write that adds, removes or moves a live product.
const CATEGORIES_KEY: &str = "CATEGORIES";
const CATEGORY_COUNTER: &str = "cat:";

/// The counter changes of a catalogue write from `before` (none for a creation) to `after`:
/// a live product counts in its category, a deleted one nowhere.
fn category_moves<'a>(
    before: Option<&'a Product>,
    after: &'a Product,
) -> Vec<(&'a CategoryId, i64)> {
    let live = |p: &'a Product| p.deleted_at.is_none().then_some(&p.category);
    match (before.and_then(live), live(after)) {
        (Some(old), Some(new)) if old == new => Vec::new(),
        (old, new) => old
            .map(|c| (c, -1))
            .into_iter()
            .chain(new.map(|c| (c, 1)))
            .collect(),
    }
}

fn category_key(category: &CategoryId) -> String {
    format!("CAT#{}", category.as_str())
}

fn millis(at: &Timestamp) -> i128 {
    at.as_datetime().unix_timestamp_nanos() / 1_000_000
}

/// The GSI sort key: newest-first order is descending order of this string.
fn sort_key(created_at: &Timestamp, id: &ProductId) -> String {
    format!("{:013}#{id}", millis(created_at))
}

/// The cursor at an index key (`LastEvaluatedKey`): the entry's sort key is its
/// [`sort_key`], `<millis>#<id>`.
fn cursor_at(key: &Item, sk_name: &str) -> Result<Cursor, RepositoryError> {
    let corrupt = || RepositoryError::Corrupt(format!("index key {sk_name}"));
    let sort = key
        .get(sk_name)
        .and_then(|v| v.as_s().ok())
        .ok_or_else(corrupt)?;
    let (millis, id) = sort.split_once('#').ok_or_else(corrupt)?;
    Ok(Cursor {
        created_at: millis
            .parse()
            .ok()
            .and_then(Timestamp::from_unix_millis)
            .ok_or_else(corrupt)?,
        id: ProductId::parse(id).map_err(|_| corrupt())?,
    })
}

/// The catalogue table.
#[derive(Debug, Clone)]
pub struct DynamoProductRepository {
    pub(crate) client: Client,
    pub(crate) table: String,
    /// How many stock items each product had when this instance last read it: a hot
    /// product's shards are read with its first item, in one round (a product whose count
    /// changed since costs a second round, and is remembered anew).
    pub(crate) known_slots: std::sync::Arc<std::sync::Mutex<HashMap<ProductId, u16>>>,
}

impl DynamoProductRepository {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            known_slots: std::sync::Arc::default(),
        }
    }
}

fn product_item(product: &Product) -> Item {
    let mut item = HashMap::from([
        (attr::PK.to_owned(), s(product_key(&product.id))),
        (attr::PRODUCT_ID.to_owned(), s(product.id.as_str())),
        (
            attr::CREATED_AT.to_owned(),
            s(product.created_at.to_rfc3339()),
        ),
    ]);
    item.extend(catalogue_fields(product));
    if product.deleted_at.is_none() {
        item.extend(index_keys(product));
    }
    item
}

/// The attributes `update_product` replaces.
fn catalogue_fields(product: &Product) -> Vec<(String, AttributeValue)> {
    let mut fields = vec![
        (attr::NAME.to_owned(), s(product.name.as_str())),
        (
            attr::NAME_LOWER.to_owned(),
            s(product.name.as_str().to_lowercase()),
        ),
        (
            attr::DESCRIPTION.to_owned(),
            s(product.description.as_str()),
        ),
        (
            attr::DESCRIPTION_LOWER.to_owned(),
            s(product.description.as_str().to_lowercase()),
        ),
        (attr::PRICE.to_owned(), n(product.price.minor())),
        (attr::CATEGORY_ID.to_owned(), s(product.category.as_str())),
        (
            attr::IMAGES.to_owned(),
            AttributeValue::L(product.images.iter().map(|i| s(i.as_str())).collect()),
        ),
        (
            attr::UPDATED_AT.to_owned(),
            s(product.updated_at.to_rfc3339()),
        ),
        (
            attr::VERSION.to_owned(),
            AttributeValue::N(product.version.to_string()),
        ),
    ];
    if let Some(deleted_at) = &product.deleted_at {
        fields.push((attr::DELETED_AT.to_owned(), s(deleted_at.to_rfc3339())));
    }
    fields
}

fn index_keys(product: &Product) -> Vec<(String, AttributeValue)> {
    let sk = sort_key(&product.created_at, &product.id);
    vec![
        (attr::GSI1PK.to_owned(), s(ALL_PRODUCTS)),
        (attr::GSI1SK.to_owned(), s(sk.clone())),
        (attr::GSI2PK.to_owned(), s(category_key(&product.category))),
        (attr::GSI2SK.to_owned(), s(sk)),
    ]
}

/// The catalogue item as a product; its stock is filled in by the caller (zero until then).
fn product_from_item(item: &Item) -> Result<Product, RepositoryError> {
    let images = match item.get(attr::IMAGES) {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| {
                v.as_s()
                    .map_err(|_| PRODUCT.corrupt(attr::IMAGES, "not a string"))
                    .and_then(|url| {
                        ImageUrl::from_stored(url).map_err(|e| PRODUCT.corrupt(attr::IMAGES, e))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    let at = |name: &str| PRODUCT.parsed(item, name, Timestamp::parse_rfc3339);
    Ok(Product {
        id: PRODUCT.parsed(item, attr::PRODUCT_ID, ProductId::parse)?,
        name: PRODUCT.parsed(item, attr::NAME, ProductName::parse)?,
        description: PRODUCT.parsed(item, attr::DESCRIPTION, Description::parse)?,
        price: Price::from_minor(PRODUCT.number(item, attr::PRICE)?)
            .map_err(|e| PRODUCT.corrupt(attr::PRICE, e))?,
        category: PRODUCT.parsed(item, attr::CATEGORY_ID, CategoryId::parse)?,
        images,
        stock: Stock::default(),
        created_at: at(attr::CREATED_AT)?,
        updated_at: at(attr::UPDATED_AT)?,
        deleted_at: item
            .get(attr::DELETED_AT)
            .map(|_| at(attr::DELETED_AT))
            .transpose()?,
        version: PRODUCT.count(item, attr::VERSION)?,
    })
}

#[async_trait]
impl ProductReader for DynamoProductRepository {
    async fn find_product(&self, id: &ProductId) -> Result<Option<Product>, RepositoryError> {
        Ok(self.find_products(std::slice::from_ref(id)).await?.pop())
    }

    /// The catalogue items and their first stock records in one `BatchGetItem`, then the other
    /// stock records of sharded products.
    async fn find_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepositoryError> {
        let keys = ids
            .iter()
            .map(|id| HashMap::from([(attr::PK.to_owned(), s(product_key(id)))]))
            .collect();
        let (stock, items) = self.read_stock(ids, keys).await?;
        let mut products = Vec::with_capacity(items.len());
        for item in &items {
            let mut product = product_from_item(item)?;
            product.stock = stock
                .get(&product.id)
                .map(StockRecords::totals)
                .unwrap_or_default();
            products.push(product);
        }
        Ok(products)
    }

    async fn stock_records(&self, id: &ProductId) -> Result<Option<StockRecords>, RepositoryError> {
        let key = HashMap::from([(attr::PK.to_owned(), s(product_key(id)))]);
        let (mut stock, items) = self.read_stock(std::slice::from_ref(id), vec![key]).await?;
        let live = items
            .first()
            .is_some_and(|item| !item.contains_key(attr::DELETED_AT));
        Ok(stock.remove(id).map(|mut records| {
            records.live = live;
            records
        }))
    }

    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, RepositoryError> {
        let (index, pk_name, sk_name, pk_value) = match &query.category {
            Some(category) => (
                CATEGORY_INDEX,
                attr::GSI2PK,
                attr::GSI2SK,
                category_key(category),
            ),
            None => (
                NEWEST_INDEX,
                attr::GSI1PK,
                attr::GSI1SK,
                ALL_PRODUCTS.to_owned(),
            ),
        };
        let mut key_condition = "#pk = :pk".to_owned();
        let mut names = HashMap::from([("#pk".to_owned(), pk_name.to_owned())]);
        let mut values = HashMap::from([(":pk".to_owned(), s(pk_value))]);
        if let Some(after) = &query.after {
            key_condition.push_str(" AND #sk < :after");
            names.insert("#sk".into(), sk_name.into());
            values.insert(":after".into(), s(sort_key(&after.created_at, &after.id)));
        }
        let mut filters = Vec::new();
        if let Some(min) = query.min_price {
            filters.push("#price >= :min");
            values.insert(":min".into(), n(min.minor()));
        }
        if let Some(max) = query.max_price {
            filters.push("#price <= :max");
            values.insert(":max".into(), n(max.minor()));
        }
        if !filters.is_empty() {
            names.insert("#price".into(), attr::PRICE.into());
        }
        if let Some(term) = &query.search {
            filters.push("(contains(#nl, :term) OR contains(#dl, :term))");
            names.insert("#nl".into(), attr::NAME_LOWER.into());
            names.insert("#dl".into(), attr::DESCRIPTION_LOWER.into());
            values.insert(":term".into(), s(term.as_str()));
        }
        let filter = (!filters.is_empty()).then(|| filters.join(" AND "));

        // One more than the page, to know whether another page follows; at most MAX_EXAMINED
        // index entries (a filter is applied after `Limit` counts): a bounded number of calls.
        let wanted = query.limit.get() + 1;
        let mut items = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        let mut examined = 0usize;
        loop {
            let batch = i32::try_from(MAX_EXAMINED - examined)
                .unwrap_or(QUERY_BATCH)
                .min(QUERY_BATCH);
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&key_condition)
                .set_filter_expression(filter.clone())
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .scan_index_forward(false)
                .limit(batch)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| crate::sdk_error("DynamoDB Query", e))?;
            // Counted before the filter: what the call read.
            examined += usize::try_from(output.scanned_count()).unwrap_or(QUERY_BATCH as usize);
            for item in output.items() {
                let product = product_from_item(item)?;
                // The index only holds live products; the shared rules are checked once more.
                if query.matches(&product) {
                    items.push(product);
                }
            }
            start = output.last_evaluated_key;
            if items.len() >= wanted || start.is_none() || examined >= MAX_EXAMINED {
                break;
            }
        }
        let next = if items.len() > query.limit.get() {
            items.truncate(query.limit.get());
            items.last().map(Cursor::after)
        } else if let Some(key) = &start {
            // Stopped at the budget: a partial page, and a cursor after the last entry read.
            Some(cursor_at(key, sk_name)?)
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

#[async_trait]
impl ProductWriter for DynamoProductRepository {
    /// The catalogue item and the first stock record, in one transaction.
    async fn create_product(&self, product: &Product) -> Result<(), RepositoryError> {
        let catalogue = Put::builder()
            .table_name(&self.table)
            .set_item(Some(product_item(product)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        let stock = Put::builder()
            .table_name(&self.table)
            .set_item(Some(crate::stock::first_stock_item(
                &product.id,
                product.stock.available,
            )))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        let mut items = vec![
            TransactWriteItem::builder().put(catalogue).build(),
            TransactWriteItem::builder().put(stock).build(),
        ];
        items.extend(self.count_categories(&category_moves(None, product))?);
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(reasons) => {
                // Already there: our own earlier attempt (same id and creation time) succeeded.
                let created = product.created_at.to_rfc3339();
                let ours = reasons.first().and_then(|r| r.item()).is_some_and(|old| {
                    old.get(attr::CREATED_AT).and_then(|v| v.as_s().ok()) == Some(&created)
                });
                if ours {
                    Ok(())
                } else {
                    Err(RepositoryError::ConcurrentUpdate)
                }
            }
        }
    }

    async fn update_product(
        &self,
        current: &Product,
        next: &Product,
    ) -> Result<(), RepositoryError> {
        let mut sets = Vec::new();
        let mut names = HashMap::from([("#v".to_owned(), attr::VERSION.to_owned())]);
        let mut values = HashMap::from([(
            ":expected".to_owned(),
            AttributeValue::N(current.version.to_string()),
        )]);
        let mut fields = catalogue_fields(next);
        let mut removes = Vec::new();
        if next.deleted_at.is_none() {
            fields.extend(index_keys(next));
            removes.push(attr::DELETED_AT);
        } else {
            removes.extend([attr::GSI1PK, attr::GSI1SK, attr::GSI2PK, attr::GSI2SK]);
        }
        for (i, (name, value)) in fields.into_iter().enumerate() {
            sets.push(format!("#f{i} = :f{i}"));
            names.insert(format!("#f{i}"), name);
            values.insert(format!(":f{i}"), value);
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            let start = names.len();
            let placeholders: Vec<String> = removes
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let placeholder = format!("#r{}", start + i);
                    names.insert(placeholder.clone(), (*name).to_owned());
                    placeholder
                })
                .collect();
            expression.push_str(&format!(" REMOVE {}", placeholders.join(", ")));
        }
        // The product, and its category counters when a live product moves, appears or goes,
        // in one transaction.
        let update = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(product_key(&current.id)))
            .update_expression(expression)
            .condition_expression("#v = :expected")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        items.extend(self.count_categories(&category_moves(Some(current), next))?);
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(RepositoryError::ConcurrentUpdate),
        }
    }
}

impl DynamoProductRepository {
    /// The transaction item that applies `moves` to the category counters (none without any).
    fn count_categories(
        &self,
        moves: &[(&CategoryId, i64)],
    ) -> Result<Option<TransactWriteItem>, RepositoryError> {
        if moves.is_empty() {
            return Ok(None);
        }
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut adds = Vec::with_capacity(moves.len());
        for (i, (category, delta)) in moves.iter().enumerate() {
            adds.push(format!("#c{i} :d{i}"));
            names.insert(
                format!("#c{i}"),
                format!("{CATEGORY_COUNTER}{}", category.as_str()),
            );
            values.insert(format!(":d{i}"), AttributeValue::N(delta.to_string()));
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(CATEGORIES_KEY))
            .update_expression(format!("ADD {}", adds.join(", ")))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
        Ok(Some(TransactWriteItem::builder().update(update).build()))
    }
}

#[async_trait]
impl CategoryReader for DynamoProductRepository {
    /// One `GetItem` of the counters item, whatever the catalogue's size.
    #[tracing::instrument(skip_all)]
    async fn categories(&self) -> Result<Vec<CategoryCount>, RepositoryError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(CATEGORIES_KEY))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?
            .item
            .unwrap_or_default();
        let mut counts = Vec::new();
        for (name, value) in &item {
            let Some(id) = name.strip_prefix(CATEGORY_COUNTER) else {
                continue;
            };
            let count = value.as_n().ok().and_then(|n| n.parse::<i64>().ok());
            match (CategoryId::parse(id), count) {
                // A category whose last product left counts zero: not listed.
                (Ok(_), Some(0)) => {}
                (Ok(id), Some(count)) if count > 0 => counts.push(CategoryCount {
                    id,
                    products: count.unsigned_abs(),
                }),
                // One bad counter never hides the others; `zx-admin recount-categories`
                // rebuilds them from the catalogue.
                _ => tracing::error!(
                    counter = name,
                    "category counter unreadable or negative: left out (run zx-admin recount-categories)"
                ),
            }
        }
        counts.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(counts)
    }
}

impl DynamoProductRepository {
    /// Rebuilds the category counters from the live products (the `newest` index, category ids
    /// only): for a table whose products predate the counters, or after a counter went wrong.
    /// Catalogue writes made while it runs may be missed: run it when none are, or again.
    pub async fn recount_categories(&self) -> Result<Vec<CategoryCount>, RepositoryError> {
        let mut counts: std::collections::BTreeMap<String, u64> = Default::default();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(NEWEST_INDEX)
                .key_condition_expression("#pk = :all")
                .projection_expression("#c")
                .expression_attribute_names("#pk", attr::GSI1PK)
                .expression_attribute_names("#c", attr::CATEGORY_ID)
                .expression_attribute_values(":all", s(ALL_PRODUCTS))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| crate::sdk_error("DynamoDB Query", e))?;
            for item in page.items() {
                let category = PRODUCT.text(item, attr::CATEGORY_ID)?;
                *counts.entry(category.to_owned()).or_default() += 1;
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let mut item = Item::from([(attr::PK.to_owned(), s(CATEGORIES_KEY))]);
        for (category, count) in &counts {
            item.insert(
                format!("{CATEGORY_COUNTER}{category}"),
                AttributeValue::N(count.to_string()),
            );
        }
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB PutItem", e))?;
        self.categories().await
    }
}
