//! Products on DynamoDB. One item per product under `pk = PRODUCT#<id>`; two sparse GSIs serve
//! newest-first listings: `newest` (`gsi1pk = ALL`) and `category-newest`
//! (`gsi2pk = CAT#<category>`), both sorted by `<created millis, 13 digits>#<id>`. A soft delete
//! removes the GSI keys, so deleted products drop out of every listing. Price and search are
//! filters over the key-ordered query (`contains` on lower-cased copies: every character is
//! literal). GSI reads are eventually consistent on AWS (immediate in DynamoDB Local).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use zx_domain::{
    CategoryId, Cursor, Description, ImageUrl, Page, Price, Product, ProductId, ProductName,
    ProductQuery, ProductReader, ProductWriter, RepositoryError, Stock, StockChange, StockChangeId,
    StockWriter, Timestamp,
};

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
    pub const AVAILABLE: &str = "available";
    pub const RESERVED: &str = "reserved";
    pub const CREATED_AT: &str = "createdAt";
    pub const UPDATED_AT: &str = "updatedAt";
    pub const DELETED_AT: &str = "deletedAt";
    pub const VERSION: &str = "version";
    /// On stock change records: the product changed, the change, and the TTL attribute.
    pub const PRODUCT_ID_OF_CHANGE: &str = "changedProductId";
    pub const CHANGE: &str = "change";
    pub const EXPIRES_AT: &str = "expiresAt";
}

const NEWEST_INDEX: &str = "newest";
const CATEGORY_INDEX: &str = "category-newest";
const ALL_PRODUCTS: &str = "ALL";
/// Items read per Query call while filling a page.
const QUERY_BATCH: i32 = 100;

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn product_key(id: &ProductId) -> String {
    format!("PRODUCT#{id}")
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

/// The catalogue table.
#[derive(Debug, Clone)]
pub struct DynamoProductRepository {
    client: Client,
    table: String,
}

impl DynamoProductRepository {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

fn product_item(product: &Product) -> Item {
    let mut item = HashMap::from([
        (attr::PK.to_owned(), s(product_key(&product.id))),
        (attr::PRODUCT_ID.to_owned(), s(product.id.as_str())),
        (attr::AVAILABLE.to_owned(), n(product.stock.available)),
        (attr::RESERVED.to_owned(), n(product.stock.reserved)),
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

fn text<'a>(item: &'a Item, name: &str) -> Result<&'a str, RepositoryError> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
        .ok_or_else(|| {
            RepositoryError::Corrupt(format!("product item lacks string attribute {name}"))
        })
}

fn number(item: &Item, name: &str) -> Result<i64, RepositoryError> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            RepositoryError::Corrupt(format!("product item lacks numeric attribute {name}"))
        })
}

fn stock_from_item(item: &Item) -> Result<Stock, RepositoryError> {
    Ok(Stock {
        available: number(item, attr::AVAILABLE)?,
        reserved: number(item, attr::RESERVED)?,
    })
}

fn product_from_item(item: &Item) -> Result<Product, RepositoryError> {
    let corrupt = |field: &str, e: String| RepositoryError::Corrupt(format!("{field}: {e}"));
    let at = |name: &str| Timestamp::parse_rfc3339(text(item, name)?).map_err(|e| corrupt(name, e));
    let images = match item.get(attr::IMAGES) {
        Some(AttributeValue::L(list)) => list
            .iter()
            .map(|v| {
                v.as_s()
                    .map_err(|_| corrupt(attr::IMAGES, "not a string".into()))
                    .and_then(|url| {
                        ImageUrl::from_stored(url).map_err(|e| corrupt(attr::IMAGES, e))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    Ok(Product {
        id: ProductId::parse(text(item, attr::PRODUCT_ID)?)
            .map_err(|e| corrupt(attr::PRODUCT_ID, e))?,
        name: ProductName::parse(text(item, attr::NAME)?).map_err(|e| corrupt(attr::NAME, e))?,
        description: Description::parse(text(item, attr::DESCRIPTION)?)
            .map_err(|e| corrupt(attr::DESCRIPTION, e))?,
        price: Price::from_minor(number(item, attr::PRICE)?)
            .map_err(|e| corrupt(attr::PRICE, e))?,
        category: CategoryId::parse(text(item, attr::CATEGORY_ID)?)
            .map_err(|e| corrupt(attr::CATEGORY_ID, e))?,
        images,
        stock: stock_from_item(item)?,
        created_at: at(attr::CREATED_AT)?,
        updated_at: at(attr::UPDATED_AT)?,
        deleted_at: item
            .get(attr::DELETED_AT)
            .map(|_| at(attr::DELETED_AT))
            .transpose()?,
        version: u64::try_from(number(item, attr::VERSION)?)
            .map_err(|e| corrupt(attr::VERSION, e.to_string()))?,
    })
}

#[async_trait]
impl ProductReader for DynamoProductRepository {
    async fn find_product(&self, id: &ProductId) -> Result<Option<Product>, RepositoryError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(product_key(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?;
        output.item.as_ref().map(product_from_item).transpose()
    }

    async fn find_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepositoryError> {
        let mut wanted: Vec<Item> = Vec::with_capacity(ids.len());
        for id in ids {
            let key = HashMap::from([(attr::PK.to_owned(), s(product_key(id)))]);
            if !wanted.contains(&key) {
                wanted.push(key);
            }
        }
        let mut products = Vec::with_capacity(wanted.len());
        let mut attempt = 0;
        // BatchGetItem reads at most 100 keys per call and may leave some unprocessed
        // (throttling): ask again for those, with backoff.
        while !wanted.is_empty() {
            let batch: Vec<Item> = wanted.drain(..wanted.len().min(100)).collect();
            let keys = KeysAndAttributes::builder()
                .set_keys(Some(batch))
                .consistent_read(true)
                .build()
                .map_err(|e| RepositoryError::failed("building a DynamoDB BatchGetItem", e))?;
            let output = self
                .client
                .batch_get_item()
                .request_items(&self.table, keys)
                .send()
                .await
                .map_err(|e| crate::sdk_error("DynamoDB BatchGetItem", e))?;
            if let Some(items) = output.responses().and_then(|r| r.get(&self.table)) {
                for item in items {
                    products.push(product_from_item(item)?);
                }
            }
            if let Some(left) = output
                .unprocessed_keys()
                .and_then(|u| u.get(&self.table))
                .map(|k| k.keys().to_vec())
                .filter(|k| !k.is_empty())
            {
                if attempt >= 5 {
                    return Err(RepositoryError::unavailable(
                        "DynamoDB BatchGetItem",
                        "keys left unprocessed after 5 attempts",
                    ));
                }
                crate::backoff(attempt).await;
                attempt += 1;
                wanted.extend(left);
            }
        }
        Ok(products)
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

        // One more than the page, to know whether another page follows.
        let wanted = query.limit.get() + 1;
        let mut items = Vec::with_capacity(wanted);
        let mut start: Option<Item> = None;
        loop {
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
                .limit(QUERY_BATCH)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| crate::sdk_error("DynamoDB Query", e))?;
            for item in output.items() {
                let product = product_from_item(item)?;
                // The index only holds live products; the shared rules are checked once more.
                if query.matches(&product) {
                    items.push(product);
                }
            }
            start = output.last_evaluated_key;
            if items.len() >= wanted || start.is_none() {
                break;
            }
        }
        let next = if items.len() > query.limit.get() {
            items.truncate(query.limit.get());
            items.last().map(Cursor::after)
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

#[async_trait]
impl ProductWriter for DynamoProductRepository {
    async fn create_product(&self, product: &Product) -> Result<(), RepositoryError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(product_item(product)))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) => match error.as_service_error() {
                // Already there: our own earlier attempt (same id and creation time) succeeded.
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let created = product.created_at.to_rfc3339();
                    let ours = failed.item().is_some_and(|old| {
                        old.get(attr::CREATED_AT).and_then(|v| v.as_s().ok()) == Some(&created)
                    });
                    if ours {
                        Ok(())
                    } else {
                        Err(RepositoryError::ConcurrentUpdate)
                    }
                }
                _ => Err(crate::sdk_error("DynamoDB PutItem", error)),
            },
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
        self.client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(product_key(&current.id)))
            .update_expression(expression)
            .condition_expression("#v = :expected")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
                {
                    RepositoryError::ConcurrentUpdate
                } else {
                    crate::sdk_error("DynamoDB UpdateItem", e)
                }
            })?;
        Ok(())
    }
}

/// How long a stock change id is remembered (DynamoDB TTL on the change record).
const CHANGE_RECORD_TTL_SECONDS: i64 = 24 * 3600;

fn change_key(id: &StockChangeId) -> String {
    format!("STOCKCHANGE#{}", id.as_str())
}

/// Why a stock update's condition failed, from the item as it was (`ALL_OLD`).
fn stock_condition_failure(old: Option<&Item>, change: StockChange) -> RepositoryError {
    let Some(old) = old.filter(|o| o.contains_key(attr::PRODUCT_ID)) else {
        return RepositoryError::NotFound;
    };
    if old.contains_key(attr::DELETED_AT) {
        return RepositoryError::NotFound;
    }
    match change {
        StockChange::Adjust(delta) if delta > 0 => RepositoryError::StockLimitExceeded,
        _ => RepositoryError::InsufficientStock,
    }
}

#[async_trait]
impl StockWriter for DynamoProductRepository {
    /// One transaction: a change record `STOCKCHANGE#<change id>` (conditional on not existing,
    /// kept 24 h by TTL) and the counter update (conditional on the product being live and the
    /// result staying within bounds). A retried change finds its record and changes nothing.
    async fn change_stock(
        &self,
        id: &ProductId,
        change: StockChange,
        change_id: &StockChangeId,
    ) -> Result<Stock, RepositoryError> {
        let live = "attribute_exists(#pk) AND attribute_not_exists(#deleted)";
        let (update, condition, value, bound) = match change {
            StockChange::Set(value) if value < 0 => return Err(RepositoryError::InsufficientStock),
            StockChange::Set(value) if value > Stock::MAX_UNITS => {
                return Err(RepositoryError::StockLimitExceeded);
            }
            StockChange::Set(value) => ("SET #available = :value", live.to_owned(), value, None),
            StockChange::Adjust(delta) if delta > Stock::MAX_UNITS => {
                return Err(RepositoryError::StockLimitExceeded);
            }
            StockChange::Adjust(delta) if delta < -Stock::MAX_UNITS => {
                return Err(RepositoryError::InsufficientStock);
            }
            // available + delta <= MAX  <=>  available <= MAX - delta
            StockChange::Adjust(delta) if delta >= 0 => (
                "SET #available = #available + :value",
                format!("{live} AND #available <= :bound"),
                delta,
                Some(Stock::MAX_UNITS - delta),
            ),
            // available + delta >= 0  <=>  available >= -delta
            StockChange::Adjust(delta) => (
                "SET #available = #available + :value",
                format!("{live} AND #available >= :bound"),
                delta,
                Some(-delta),
            ),
        };
        let mut counter = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(product_key(id)))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#deleted", attr::DELETED_AT)
            .expression_attribute_names("#available", attr::AVAILABLE)
            .expression_attribute_values(":value", n(value))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some(bound) = bound {
            counter = counter.expression_attribute_values(":bound", n(bound));
        }
        let counter = counter
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
        let expires = Timestamp::now().unix_seconds() + CHANGE_RECORD_TTL_SECONDS;
        let record = Put::builder()
            .table_name(&self.table)
            .item(attr::PK, s(change_key(change_id)))
            .item(attr::PRODUCT_ID_OF_CHANGE, s(id.as_str()))
            .item(attr::CHANGE, s(change.fingerprint()))
            .item(attr::EXPIRES_AT, n(expires))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        let items = vec![
            TransactWriteItem::builder().put(record).build(),
            TransactWriteItem::builder().update(counter).build(),
        ];
        match crate::transact(&self.client, items).await? {
            Ok(()) => {}
            // The change record exists: applied before; a retry if it names the same change.
            Err(reasons) if crate::condition_failed(&reasons, 0) => {
                let old = reasons.first().and_then(|r| r.item());
                let recorded = |name: &str| {
                    old.and_then(|o| o.get(name)?.as_s().ok())
                        .map(String::as_str)
                };
                let same_product = recorded(attr::PRODUCT_ID_OF_CHANGE) == Some(id.as_str());
                // Records from before the change was stored match on the product alone.
                let same_change =
                    recorded(attr::CHANGE).is_none_or(|recorded| recorded == change.fingerprint());
                if !(same_product && same_change) {
                    return Err(RepositoryError::IdempotencyKeyReused);
                }
                tracing::info!(product_id = %id, "stock change already applied");
            }
            Err(reasons) => {
                let old = reasons.get(1).and_then(|r| r.item());
                return Err(stock_condition_failure(old, change));
            }
        }
        let product = self
            .find_product(id)
            .await?
            .ok_or(RepositoryError::NotFound)?;
        Ok(product.stock)
    }
}

/// Reservation records live beside the products they hold stock of, so a reservation and its
/// stock changes are one transaction: `pk = RESERVATION#<order id>`, `state` (`held` or
/// `released`), `lines` (JSON).
mod reservation {
    pub const STATE: &str = "state";
    pub const LINES: &str = "lines";

    pub fn key(order: &zx_domain::OrderId) -> String {
        format!("RESERVATION#{order}")
    }
}

impl DynamoProductRepository {
    async fn reservation(
        &self,
        order: &zx_domain::OrderId,
    ) -> Result<Option<(zx_domain::ReservationState, Vec<zx_domain::ReserveLine>)>, RepositoryError>
    {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(reservation::key(order)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?
            .item;
        item.map(|item| {
            let state = zx_domain::ReservationState::parse(text(&item, reservation::STATE)?)
                .map_err(RepositoryError::Corrupt)?;
            let lines = serde_json::from_str(text(&item, reservation::LINES)?)
                .map_err(|e| RepositoryError::Corrupt(format!("reservation lines: {e}")))?;
            Ok((state, lines))
        })
        .transpose()
    }

    fn stock_move(
        &self,
        line: &zx_domain::ReserveLine,
        take: bool,
    ) -> Result<TransactWriteItem, RepositoryError> {
        let mut update = if take {
            Update::builder()
                .update_expression("SET #available = #available - :q, #reserved = #reserved + :q")
                .condition_expression(
                    "attribute_exists(#pk) AND attribute_not_exists(#deleted) AND #available >= :q",
                )
                .expression_attribute_names("#deleted", attr::DELETED_AT)
        } else {
            // Given back even to a product deleted meanwhile (its counters stay true).
            Update::builder()
                .update_expression("SET #available = #available + :q, #reserved = #reserved - :q")
                .condition_expression("attribute_exists(#pk)")
        };
        update = update
            .table_name(&self.table)
            .key(attr::PK, s(product_key(&line.product_id)))
            .expression_attribute_names("#pk", attr::PK)
            .expression_attribute_names("#available", attr::AVAILABLE)
            .expression_attribute_names("#reserved", attr::RESERVED)
            .expression_attribute_values(":q", n(i64::from(line.quantity)));
        let update = update
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
        Ok(TransactWriteItem::builder().update(update).build())
    }
}

#[async_trait]
impl zx_domain::InventoryRepository for DynamoProductRepository {
    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn reserve(
        &self,
        order: &zx_domain::OrderId,
        lines: &[zx_domain::ReserveLine],
    ) -> Result<zx_domain::Reservation, RepositoryError> {
        use zx_domain::{Reservation, ReservationState};
        let record = Put::builder()
            .table_name(&self.table)
            .item(attr::PK, s(reservation::key(order)))
            .item(reservation::STATE, s(ReservationState::Held.as_str()))
            .item(
                reservation::LINES,
                s(serde_json::to_string(lines)
                    .map_err(|e| RepositoryError::failed("serialising a reservation", e))?),
            )
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Put", e))?;
        let mut items = vec![TransactWriteItem::builder().put(record).build()];
        for line in lines {
            items.push(self.stock_move(line, true)?);
        }
        let reasons = match crate::transact(&self.client, items).await? {
            Ok(()) => return Ok(Reservation::Held),
            Err(reasons) => reasons,
        };
        if crate::condition_failed(&reasons, 0) {
            // Recorded before: a redelivery, or a release that came first.
            return match self.reservation(order).await? {
                Some((ReservationState::Held | ReservationState::Committed, _)) => {
                    Ok(Reservation::Held)
                }
                Some((ReservationState::Released, _)) => Ok(Reservation::AlreadyReleased),
                None => Err(RepositoryError::ConcurrentUpdate),
            };
        }
        let short = (0..lines.len())
            .find(|i| crate::condition_failed(&reasons, i + 1))
            .and_then(|i| lines.get(i))
            .ok_or_else(|| {
                RepositoryError::failed("DynamoDB reserve", "cancelled without a failed condition")
            })?;
        // A duplicate delivery racing this one may have taken the stock (and recorded the
        // reservation) while only our stock condition was reported: answer what is recorded.
        match self.reservation(order).await? {
            Some((ReservationState::Held | ReservationState::Committed, _)) => {
                return Ok(Reservation::Held);
            }
            Some((ReservationState::Released, _)) => return Ok(Reservation::AlreadyReleased),
            None => {}
        }
        let live = self
            .find_product(&short.product_id)
            .await?
            .is_some_and(|p| p.deleted_at.is_none());
        Ok(Reservation::Rejected {
            product_id: short.product_id.clone(),
            reason: if live { "out_of_stock" } else { "unavailable" },
        })
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn release(
        &self,
        order: &zx_domain::OrderId,
    ) -> Result<zx_domain::Release, RepositoryError> {
        use zx_domain::{Release, ReservationState};
        // Twice at most: a reserve that landed between our read and our tombstone.
        for _ in 0..2 {
            match self.reservation(order).await? {
                // Released before, or shipped (no restock).
                Some((ReservationState::Released | ReservationState::Committed, _)) => {
                    return Ok(Release::Nothing);
                }
                None => {
                    let tombstone = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .item(attr::PK, s(reservation::key(order)))
                        .item(reservation::STATE, s(ReservationState::Released.as_str()))
                        .item(reservation::LINES, s("[]"))
                        .condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", attr::PK)
                        .send()
                        .await;
                    match tombstone {
                        Ok(_) => return Ok(Release::Nothing),
                        Err(error)
                            if error.as_service_error().is_some_and(
                                PutItemError::is_conditional_check_failed_exception,
                            ) =>
                        {
                            continue;
                        }
                        Err(error) => return Err(crate::sdk_error("DynamoDB PutItem", error)),
                    }
                }
                Some((ReservationState::Held, lines)) => {
                    let record = Update::builder()
                        .table_name(&self.table)
                        .key(attr::PK, s(reservation::key(order)))
                        .update_expression("SET #state = :released")
                        .condition_expression("#state = :held")
                        .expression_attribute_names("#state", reservation::STATE)
                        .expression_attribute_values(
                            ":released",
                            s(ReservationState::Released.as_str()),
                        )
                        .expression_attribute_values(":held", s(ReservationState::Held.as_str()))
                        .build()
                        .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
                    let mut items = vec![TransactWriteItem::builder().update(record).build()];
                    for line in &lines {
                        items.push(self.stock_move(line, false)?);
                    }
                    return match crate::transact(&self.client, items).await? {
                        Ok(()) => Ok(Release::Restored(
                            lines.into_iter().map(|l| l.product_id).collect(),
                        )),
                        // Released by a concurrent delivery.
                        Err(reasons) if crate::condition_failed(&reasons, 0) => {
                            Ok(Release::Nothing)
                        }
                        Err(_) => Err(RepositoryError::failed(
                            "DynamoDB release",
                            "a product of the reservation no longer exists",
                        )),
                    };
                }
            }
        }
        Err(RepositoryError::ConcurrentUpdate)
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn commit(
        &self,
        order: &zx_domain::OrderId,
    ) -> Result<zx_domain::Commit, RepositoryError> {
        use zx_domain::{Commit, ReservationState};
        let Some((ReservationState::Held, lines)) = self.reservation(order).await? else {
            return Ok(Commit::Nothing);
        };
        let record = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(reservation::key(order)))
            .update_expression("SET #state = :committed")
            .condition_expression("#state = :held")
            .expression_attribute_names("#state", reservation::STATE)
            .expression_attribute_values(":committed", s(ReservationState::Committed.as_str()))
            .expression_attribute_values(":held", s(ReservationState::Held.as_str()))
            .build()
            .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
        let mut items = vec![TransactWriteItem::builder().update(record).build()];
        for line in &lines {
            let update = Update::builder()
                .table_name(&self.table)
                .key(attr::PK, s(product_key(&line.product_id)))
                .update_expression("SET #reserved = #reserved - :q")
                .condition_expression("attribute_exists(#pk) AND #reserved >= :q")
                .expression_attribute_names("#pk", attr::PK)
                .expression_attribute_names("#reserved", attr::RESERVED)
                .expression_attribute_values(":q", n(i64::from(line.quantity)))
                .build()
                .map_err(|e| RepositoryError::failed("building a DynamoDB Update", e))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(Commit::Committed(
                lines.into_iter().map(|l| l.product_id).collect(),
            )),
            // Committed (or released) by a concurrent delivery.
            Err(reasons) if crate::condition_failed(&reasons, 0) => Ok(Commit::Nothing),
            Err(_) => Err(RepositoryError::Corrupt(format!(
                "reservation of order {order}: a product is gone or holds fewer reserved units"
            ))),
        }
    }
}
