//! Stock on DynamoDB, apart from the catalogue item: one small record per shard of a product,
//! `pk = STOCK#<product id>#<shard, 2 digits>`, in no index, holding `available`, `reserved`
//! and `version` (+1 on every write); shard `00` also holds `shards` (how many shards new
//! reservations use) and `slots` (how many records exist: retired shards keep their reserved
//! units until released or shipped). Reservation records sit beside them
//! ([`crate::reservations`]). Here: reading stock, and admins' changes (`PUT /stock`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use zx_domain::stock::{MAX_SHARDS, Shard, StockRecords};
use zx_domain::{
    ProductId, RepositoryError, STOCK_CHANGE_RETENTION, Stock, StockChange, StockChangeId,
    StockWriter, Timestamp,
};

use crate::item::{Item, n, number, s, text};
use crate::products::DynamoProductRepository;

pub(crate) mod attr {
    pub const PK: &str = "pk";
    pub const AVAILABLE: &str = "available";
    pub const RESERVED: &str = "reserved";
    pub const VERSION: &str = "version";
    pub const SHARDS: &str = "shards";
    pub const SLOTS: &str = "slots";
    pub const DELETED_AT: &str = "deletedAt";
    pub const STATE: &str = "state";
    pub const LINES: &str = "lines";
    pub const PRODUCT_ID_OF_CHANGE: &str = "changedProductId";
    pub const CHANGE: &str = "change";
    pub const EXPIRES_AT: &str = "expiresAt";
}

/// Most items one `TransactWriteItems` may hold.
pub(crate) const TRANSACTION_ITEMS: usize = 100;
/// Plans tried for one batch before it is left for redelivery (each after a collision).
pub(crate) const ATTEMPTS: usize = 8;
/// How long a stock change id is remembered (DynamoDB TTL on the change record).
pub(crate) const CHANGE_RECORD_TTL_SECONDS: i64 = STOCK_CHANGE_RETENTION.as_secs() as i64;

pub(crate) fn stock_key(id: &ProductId, shard: u16) -> String {
    format!("STOCK#{id}#{shard:02}")
}

pub(crate) fn change_key(id: &StockChangeId) -> String {
    format!("STOCKCHANGE#{}", id.as_str())
}

pub(crate) fn key(pk: String) -> Item {
    HashMap::from([(attr::PK.to_owned(), s(pk))])
}

pub(crate) fn built<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> RepositoryError {
    move |e| RepositoryError::failed(what, e)
}

/// The first stock record of a product: what a product is created with.
pub(crate) fn first_stock_item(id: &ProductId, available: i64) -> Item {
    HashMap::from([
        (attr::PK.to_owned(), s(stock_key(id, 0))),
        (attr::AVAILABLE.to_owned(), n(available)),
        (attr::RESERVED.to_owned(), n(0)),
        (attr::VERSION.to_owned(), n(1)),
        (attr::SHARDS.to_owned(), n(1)),
        (attr::SLOTS.to_owned(), n(1)),
    ])
}

pub(crate) fn shard_of(item: &Item, index: u16) -> Result<Shard, RepositoryError> {
    let corrupt = |what: &str| {
        RepositoryError::Corrupt(format!(
            "stock record {}: {what}",
            text(item, attr::PK).unwrap_or("?")
        ))
    };
    Ok(Shard {
        index,
        available: number(item, attr::AVAILABLE).ok_or_else(|| corrupt("available"))?,
        reserved: number(item, attr::RESERVED).ok_or_else(|| corrupt("reserved"))?,
        version: number(item, attr::VERSION)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0),
    })
}

/// An update of one shard's counters: `available += change` (a negative change only while the
/// shard holds that much), and `reserved += moved` when units move to or from `reserved`.
pub(crate) fn shard_update(
    table: &str,
    id: &ProductId,
    shard: u16,
    available: i64,
    reserved: i64,
    extra: Option<(u16, u16)>,
) -> Result<TransactWriteItem, RepositoryError> {
    let mut expression = "SET #a = #a + :a, #r = #r + :r, #v = #v + :one".to_owned();
    let mut update = Update::builder()
        .table_name(table)
        .key(attr::PK, s(stock_key(id, shard)))
        .expression_attribute_names("#a", attr::AVAILABLE)
        .expression_attribute_names("#r", attr::RESERVED)
        .expression_attribute_names("#v", attr::VERSION)
        .expression_attribute_names("#pk", attr::PK)
        .expression_attribute_values(":a", n(available))
        .expression_attribute_values(":r", n(reserved))
        .expression_attribute_values(":one", n(1));
    let mut conditions = vec!["attribute_exists(#pk)".to_owned()];
    if available < 0 {
        conditions.push("#a >= :needA".into());
        update = update.expression_attribute_values(":needA", n(-available));
    } else if available > 0 {
        conditions.push("#a <= :roomA".into());
        update = update.expression_attribute_values(":roomA", n(Stock::MAX_UNITS - available));
    }
    if reserved < 0 {
        conditions.push("#r >= :needR".into());
        update = update.expression_attribute_values(":needR", n(-reserved));
    }
    if let Some((shards, slots)) = extra {
        expression.push_str(", #shards = :shards, #slots = :slots");
        update = update
            .expression_attribute_names("#shards", attr::SHARDS)
            .expression_attribute_names("#slots", attr::SLOTS)
            .expression_attribute_values(":shards", n(i64::from(shards)))
            .expression_attribute_values(":slots", n(i64::from(slots)));
    }
    let update = update
        .update_expression(expression)
        .condition_expression(conditions.join(" AND "))
        .build()
        .map_err(built("building a DynamoDB Update"))?;
    Ok(TransactWriteItem::builder().update(update).build())
}

/// Items by key (consistent reads), in any order; unknown keys are left out. `BatchGetItem`
/// reads 100 keys a call and may leave some unprocessed (throttling): those are asked for
/// again, with backoff.
pub(crate) async fn batch_get_items(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    keys: Vec<Item>,
    projection: &[&str],
) -> Result<Vec<Item>, RepositoryError> {
    let names: HashMap<String, String> = projection
        .iter()
        .enumerate()
        .map(|(i, name)| (format!("#p{i}"), (*name).to_owned()))
        .collect();
    let expression = (0..projection.len())
        .map(|i| format!("#p{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut wanted: Vec<Item> = Vec::with_capacity(keys.len());
    for key in keys {
        if !wanted.contains(&key) {
            wanted.push(key);
        }
    }
    let mut items = Vec::with_capacity(wanted.len());
    let mut attempt = 0;
    while !wanted.is_empty() {
        let batch: Vec<Item> = wanted.drain(..wanted.len().min(100)).collect();
        let mut keys = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
            .set_keys(Some(batch))
            .consistent_read(true);
        if !projection.is_empty() {
            keys = keys
                .projection_expression(&expression)
                .set_expression_attribute_names(Some(names.clone()));
        }
        let keys = keys
            .build()
            .map_err(built("building a DynamoDB BatchGetItem"))?;
        let output = client
            .batch_get_item()
            .request_items(table, keys)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB BatchGetItem", e))?;
        if let Some(found) = output.responses().and_then(|r| r.get(table)) {
            items.extend(found.iter().cloned());
        }
        if let Some(left) = output
            .unprocessed_keys()
            .and_then(|u| u.get(table))
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
    Ok(items)
}

impl DynamoProductRepository {
    /// [`batch_get_items`] of this table, whole items.
    pub(crate) async fn batch_get(&self, keys: Vec<Item>) -> Result<Vec<Item>, RepositoryError> {
        batch_get_items(&self.client, &self.table, keys, &[]).await
    }

    /// [`batch_get_items`] of this table, only what stock, reservations and a product's
    /// liveness are made of (a catalogue item's descriptions are not read to reserve).
    pub(crate) async fn batch_get_stock(
        &self,
        keys: Vec<Item>,
    ) -> Result<Vec<Item>, RepositoryError> {
        batch_get_items(&self.client, &self.table, keys, STOCK_ATTRIBUTES).await
    }

    /// The stock records of these products (two rounds: the first records, which say how many
    /// there are, then the others), with `extra` keys read in the first round. A product
    /// without stock records is left out.
    pub(crate) async fn read_stock(
        &self,
        ids: &[ProductId],
        extra: Vec<Item>,
    ) -> Result<(HashMap<ProductId, StockRecords>, Vec<Item>), RepositoryError> {
        self.read_stock_with(ids, extra, false).await
    }

    /// [`Self::read_stock`]; with `projected`, only [`STOCK_ATTRIBUTES`] of every item.
    pub(crate) async fn read_stock_with(
        &self,
        ids: &[ProductId],
        extra: Vec<Item>,
        projected: bool,
    ) -> Result<(HashMap<ProductId, StockRecords>, Vec<Item>), RepositoryError> {
        let known: HashMap<ProductId, u16> = self
            .known_slots
            .lock()
            .map(|known| {
                ids.iter()
                    .filter_map(|id| known.get(id).map(|n| (id.clone(), *n)))
                    .collect()
            })
            .unwrap_or_default();
        let mut keys: Vec<Item> = Vec::with_capacity(ids.len() + extra.len());
        for id in ids {
            for shard in 0..known.get(id).copied().unwrap_or(1) {
                keys.push(key(stock_key(id, shard)));
            }
        }
        keys.extend(extra);
        let items = if projected {
            self.batch_get_stock(keys).await?
        } else {
            self.batch_get(keys).await?
        };
        let mut records = HashMap::new();
        let mut fetched: Vec<(ProductId, u16, Item)> = Vec::new();
        let mut others = Vec::new();
        for item in items {
            match stock_item_of(&item, ids) {
                Some((id, 0)) => {
                    let active = number(&item, attr::SHARDS)
                        .and_then(|v| u16::try_from(v).ok())
                        .unwrap_or(1)
                        .clamp(1, MAX_SHARDS);
                    records.insert(
                        id.clone(),
                        StockRecords {
                            live: true,
                            active,
                            shards: vec![shard_of(&item, 0)?],
                        },
                    );
                    fetched.push((id, 0, item));
                }
                Some((id, shard)) => fetched.push((id, shard, item)),
                None => others.push(item),
            }
        }
        // Each product's other shards: those read already, and a second round for the rest.
        let mut more = Vec::new();
        let mut slots_of: HashMap<ProductId, u16> = HashMap::new();
        for (id, _, item) in fetched.iter().filter(|(_, shard, _)| *shard == 0) {
            let active = records.get(id).map_or(1, |r| r.active);
            let slots = number(item, attr::SLOTS)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(1)
                .clamp(active, MAX_SHARDS);
            slots_of.insert(id.clone(), slots);
            for shard in 1..slots {
                if !fetched.iter().any(|(i, s, _)| i == id && *s == shard) {
                    more.push(key(stock_key(id, shard)));
                }
            }
        }
        if !more.is_empty() {
            for item in self.batch_get_stock(more).await? {
                if let Some((id, shard)) = stock_item_of(&item, ids) {
                    fetched.push((id, shard, item));
                }
            }
        }
        for (id, shard, item) in &fetched {
            let within = slots_of.get(id).is_some_and(|slots| shard < slots);
            if *shard > 0
                && within
                && let Some(entry) = records.get_mut(id)
            {
                entry.shards.push(shard_of(item, *shard)?);
            }
        }
        if let Ok(mut known) = self.known_slots.lock() {
            for (id, slots) in slots_of {
                known.insert(id, slots);
            }
        }
        for entry in records.values_mut() {
            entry.shards.sort_by_key(|s| s.index);
        }
        Ok((records, others))
    }

    /// The stock of these products, and whether each is live (exists, not deleted), read for
    /// a change: a product without stock records or deleted is not live.
    pub(crate) async fn stock_for_change(
        &self,
        ids: &[ProductId],
    ) -> Result<HashMap<ProductId, StockRecords>, RepositoryError> {
        Ok(self.stock_and_reservations(ids, &[]).await?.0)
    }

    /// One live product's stock, for a change ([`RepositoryError::NotFound`] when it is not).
    pub(crate) async fn live_stock(&self, id: &ProductId) -> Result<StockRecords, RepositoryError> {
        self.stock_for_change(std::slice::from_ref(id))
            .await?
            .remove(id)
            .filter(|r| r.live)
            .ok_or(RepositoryError::NotFound)
    }
}

/// The product (one of `ids`) and shard a stock item is of.
pub(crate) fn stock_item_of(item: &Item, ids: &[ProductId]) -> Option<(ProductId, u16)> {
    let (id_part, shard) = text(item, attr::PK)?
        .strip_prefix("STOCK#")?
        .rsplit_once('#')?;
    let shard = shard.parse::<u16>().ok()?;
    ids.iter()
        .find(|id| id.as_str() == id_part)
        .map(|id| (id.clone(), shard))
}

/// What a stock read takes of the products table's items.
pub(crate) const STOCK_ATTRIBUTES: &[&str] = &[
    attr::PK,
    attr::AVAILABLE,
    attr::RESERVED,
    attr::VERSION,
    attr::SHARDS,
    attr::SLOTS,
    attr::DELETED_AT,
    attr::STATE,
    attr::LINES,
];

#[async_trait]
impl StockWriter for DynamoProductRepository {
    /// One transaction: a change record `STOCKCHANGE#<change id>` (conditional on not existing,
    /// kept 24 h by TTL) and the shards' updates (relative for `{delta}`, each conditional on
    /// what it takes; for `{available}`, conditional on every shard's version being the one the
    /// caller's tag was made of). A retried change finds its record and changes nothing.
    async fn change_stock(
        &self,
        id: &ProductId,
        change: StockChange,
        change_id: &StockChangeId,
    ) -> Result<Stock, RepositoryError> {
        change.check_bounds()?;
        for _ in 0..ATTEMPTS {
            let records = self.live_stock(id).await?;
            let totals = records.totals();
            let mut items = Vec::new();
            match &change {
                StockChange::Set { available, tag } => {
                    if *tag != records.tag() {
                        return self
                            .replayed(id, change_id, &change)
                            .await?
                            .ok_or(RepositoryError::PreconditionFailed);
                    }
                    let targets = zx_domain::stock::even(*available, records.active);
                    for shard in &records.shards {
                        let target = targets.get(usize::from(shard.index)).copied().unwrap_or(0);
                        let update = Update::builder()
                            .table_name(&self.table)
                            .key(attr::PK, s(stock_key(id, shard.index)))
                            .update_expression("SET #a = :a, #v = #v + :one")
                            .condition_expression("#v = :seen")
                            .expression_attribute_names("#a", attr::AVAILABLE)
                            .expression_attribute_names("#v", attr::VERSION)
                            .expression_attribute_values(":a", n(target))
                            .expression_attribute_values(":one", n(1))
                            .expression_attribute_values(
                                ":seen",
                                n(i64::try_from(shard.version).unwrap_or(i64::MAX)),
                            )
                            .build()
                            .map_err(built("building a DynamoDB Update"))?;
                        items.push(TransactWriteItem::builder().update(update).build());
                    }
                }
                StockChange::Adjust(delta) => {
                    if totals.available.saturating_add(*delta) > Stock::MAX_UNITS {
                        return Err(RepositoryError::StockLimitExceeded);
                    }
                    let changes = zx_domain::stock::adjust(&records, *delta)
                        .ok_or(RepositoryError::InsufficientStock)?;
                    for (shard, amount) in changes {
                        items.push(shard_update(&self.table, id, shard, amount, 0, None)?);
                    }
                }
            }
            let expires = Timestamp::now().unix_seconds() + CHANGE_RECORD_TTL_SECONDS;
            let record = Put::builder()
                .table_name(&self.table)
                .item(attr::PK, s(change_key(change_id)))
                .item(attr::PRODUCT_ID_OF_CHANGE, s(id.as_str()))
                .item(attr::CHANGE, s(change.fingerprint()))
                .item(attr::EXPIRES_AT, n(expires))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", attr::PK)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(built("building a DynamoDB Put"))?;
            items.insert(0, TransactWriteItem::builder().put(record).build());
            match crate::transact(&self.client, items).await? {
                Ok(()) => return self.totals(id).await,
                Err(reasons) if crate::condition_failed(&reasons, 0) => {
                    let old = reasons.first().and_then(|r| r.item());
                    let recorded = |name: &str| old.and_then(|o| text(o, name));
                    let same_product = recorded(attr::PRODUCT_ID_OF_CHANGE) == Some(id.as_str());
                    // Records from before the change was stored match on the product alone.
                    let same_change = recorded(attr::CHANGE)
                        .is_none_or(|recorded| recorded == change.fingerprint());
                    if !(same_product && same_change) {
                        return Err(RepositoryError::IdempotencyKeyReused);
                    }
                    tracing::info!(product_id = %id, "stock change already applied");
                    return self.totals(id).await;
                }
                // A shard changed since it was read.
                Err(_) if matches!(change, StockChange::Set { .. }) => {
                    return Err(RepositoryError::PreconditionFailed);
                }
                Err(_) => continue,
            }
        }
        Err(RepositoryError::unavailable(
            "DynamoDB change stock",
            "the product's stock kept changing under the change",
        ))
    }

    /// One transaction: the new shards created, every shard's available units moved (relative
    /// changes, each conditional on what it takes) so they spread evenly over the active shards,
    /// and the count on shard `00`. Tried again when a reservation changed a shard meanwhile.
    async fn set_stock_shards(
        &self,
        id: &ProductId,
        shards: u16,
    ) -> Result<StockRecords, RepositoryError> {
        zx_domain::stock::check_shard_count(shards)?;
        for _ in 0..ATTEMPTS {
            let records = self.live_stock(id).await?;
            let slots = records
                .shards
                .iter()
                .map(|s| s.index + 1)
                .max()
                .unwrap_or(1)
                .max(shards);
            let changes: HashMap<u16, i64> = zx_domain::stock::rebalance(&records, shards)
                .into_iter()
                .collect();
            let mut items = Vec::new();
            for index in 0..slots {
                let change = changes.get(&index).copied().unwrap_or(0);
                let exists = records.shards.iter().any(|s| s.index == index);
                if !exists {
                    let put = Put::builder()
                        .table_name(&self.table)
                        .item(attr::PK, s(stock_key(id, index)))
                        .item(attr::AVAILABLE, n(change.max(0)))
                        .item(attr::RESERVED, n(0))
                        .item(attr::VERSION, n(1))
                        .condition_expression("attribute_not_exists(#pk)")
                        .expression_attribute_names("#pk", attr::PK)
                        .build()
                        .map_err(built("building a DynamoDB Put"))?;
                    items.push(TransactWriteItem::builder().put(put).build());
                } else if index == 0 {
                    items.push(shard_update(
                        &self.table,
                        id,
                        0,
                        change,
                        0,
                        Some((shards, slots)),
                    )?);
                } else if change != 0 {
                    items.push(shard_update(&self.table, id, index, change, 0, None)?);
                }
            }
            match crate::transact(&self.client, items).await? {
                Ok(()) => {
                    return self
                        .stock_for_change(std::slice::from_ref(id))
                        .await?
                        .remove(id)
                        .ok_or(RepositoryError::NotFound);
                }
                Err(_) => continue,
            }
        }
        Err(RepositoryError::unavailable(
            "DynamoDB set stock shards",
            "the product's stock kept changing under the change",
        ))
    }
}

impl DynamoProductRepository {
    pub(crate) async fn totals(&self, id: &ProductId) -> Result<Stock, RepositoryError> {
        self.read_stock(std::slice::from_ref(id), Vec::new())
            .await?
            .0
            .remove(id)
            .map(|r| r.totals())
            .ok_or(RepositoryError::NotFound)
    }

    /// The counters if `change_id` was already applied as `change` to `id` (a retry whose
    /// tag went stale because its first attempt applied it).
    pub(crate) async fn replayed(
        &self,
        id: &ProductId,
        change_id: &StockChangeId,
        change: &StockChange,
    ) -> Result<Option<Stock>, RepositoryError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(change_key(change_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| crate::sdk_error("DynamoDB GetItem", e))?
            .item;
        match item {
            Some(item)
                if text(&item, attr::PRODUCT_ID_OF_CHANGE) == Some(id.as_str())
                    && text(&item, attr::CHANGE) == Some(change.fingerprint().as_str()) =>
            {
                Ok(Some(self.totals(id).await?))
            }
            Some(_) => Err(RepositoryError::IdempotencyKeyReused),
            None => Ok(None),
        }
    }
}
