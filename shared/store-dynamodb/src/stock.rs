//! Stock on DynamoDB, apart from the catalogue item: one small record per shard of a product,
//! `pk = STOCK#<product id>#<shard, 2 digits>`, in no index, holding `available`, `reserved`
//! and `version` (+1 on every write); shard `00` also holds `shards` (how many shards new
//! reservations use) and `slots` (how many records exist: retired shards keep their reserved
//! units until released or shipped). A reservation record `RESERVATION#<order id>` (`state`,
//! `lines` with the shard each line was taken from) sits beside them.
//!
//! A batch of reservations is planned against the records read (consistently) for it
//! ([`zx_domain::stock::plan`]) and written in one transaction: one conditional update per
//! (product, shard) the batch takes from, plus one record per held order. A rejection writes
//! nothing.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use zx_domain::stock::{HeldLine, MAX_SHARDS, Planned, Shard, StockRecords};
use zx_domain::{
    BatchReservation, Commit, InventoryRepository, OrderId, ProductId, RESERVATION_RETENTION,
    Release, RepositoryError, Reservation, ReservationState, ReserveLine, STOCK_CHANGE_RETENTION,
    Stock, StockChange, StockChangeId, StockWriter, Timestamp,
};

use crate::item::{Item, n, number, s, text};
use crate::products::{DynamoProductRepository, product_key};

mod attr {
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
const TRANSACTION_ITEMS: usize = 100;
/// Plans tried for one batch before it is left for redelivery (each after a collision).
const ATTEMPTS: usize = 8;
/// How long a stock change id is remembered (DynamoDB TTL on the change record).
const CHANGE_RECORD_TTL_SECONDS: i64 = STOCK_CHANGE_RETENTION.as_secs() as i64;

pub(crate) fn stock_key(id: &ProductId, shard: u16) -> String {
    format!("STOCK#{id}#{shard:02}")
}

fn reservation_key(order: &OrderId) -> String {
    format!("RESERVATION#{order}")
}

fn change_key(id: &StockChangeId) -> String {
    format!("STOCKCHANGE#{}", id.as_str())
}

fn key(pk: String) -> Item {
    HashMap::from([(attr::PK.to_owned(), s(pk))])
}

fn built<E: std::error::Error + Send + Sync + 'static>(
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

fn shard_of(item: &Item, index: u16) -> Result<Shard, RepositoryError> {
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
fn shard_update(
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

/// Where a reservation record stands.
fn parse_reservation(item: &Item) -> Result<(ReservationState, Vec<HeldLine>), RepositoryError> {
    let state = ReservationState::parse(text(item, attr::STATE).unwrap_or_default())
        .map_err(RepositoryError::Corrupt)?;
    let lines = serde_json::from_str(text(item, attr::LINES).unwrap_or("[]"))
        .map_err(|e| RepositoryError::Corrupt(format!("reservation lines: {e}")))?;
    Ok((state, lines))
}

fn products_of(lines: &[HeldLine]) -> Vec<ProductId> {
    lines
        .iter()
        .map(|l| l.product_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
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
    async fn batch_get_stock(&self, keys: Vec<Item>) -> Result<Vec<Item>, RepositoryError> {
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
    async fn read_stock_with(
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
    async fn stock_for_change(
        &self,
        ids: &[ProductId],
    ) -> Result<HashMap<ProductId, StockRecords>, RepositoryError> {
        Ok(self.stock_and_reservations(ids, &[]).await?.0)
    }

    /// One live product's stock, for a change ([`RepositoryError::NotFound`] when it is not).
    async fn live_stock(&self, id: &ProductId) -> Result<StockRecords, RepositoryError> {
        self.stock_for_change(std::slice::from_ref(id))
            .await?
            .remove(id)
            .filter(|r| r.live)
            .ok_or(RepositoryError::NotFound)
    }

    /// [`Self::stock_for_change`] and the reservation records of `orders`, in one read (a
    /// second only for products of several shards).
    async fn stock_and_reservations(
        &self,
        ids: &[ProductId],
        orders: &[OrderId],
    ) -> Result<
        (
            HashMap<ProductId, StockRecords>,
            HashMap<OrderId, (ReservationState, Vec<HeldLine>)>,
        ),
        RepositoryError,
    > {
        let mut extra: Vec<Item> = ids.iter().map(|id| key(product_key(id))).collect();
        extra.extend(orders.iter().map(|o| key(reservation_key(o))));
        let (mut records, items) = self.read_stock_with(ids, extra, true).await?;
        for (id, entry) in records.iter_mut() {
            let product = items
                .iter()
                .find(|item| text(item, attr::PK) == Some(product_key(id).as_str()));
            entry.live = product.is_some_and(|p| !p.contains_key(attr::DELETED_AT));
        }
        let mut found = HashMap::new();
        for item in &items {
            let pk = text(item, attr::PK).unwrap_or_default();
            if let Some(order) = orders.iter().find(|o| pk == reservation_key(o)) {
                found.insert(order.clone(), parse_reservation(item)?);
            }
        }
        Ok((records, found))
    }

    async fn reservations(
        &self,
        orders: &[OrderId],
    ) -> Result<HashMap<OrderId, (ReservationState, Vec<HeldLine>)>, RepositoryError> {
        let keys = orders.iter().map(|o| key(reservation_key(o))).collect();
        let mut found = HashMap::new();
        for item in self.batch_get_stock(keys).await? {
            let pk = text(&item, attr::PK).unwrap_or_default();
            if let Some(order) = orders.iter().find(|o| pk == reservation_key(o)) {
                found.insert(order.clone(), parse_reservation(&item)?);
            }
        }
        Ok(found)
    }

    /// Writes a held reservation's stock back (`release`) or out (`commit`) and flips its
    /// record from `held` to `state`, in one transaction. `false` when the record was no
    /// longer held (a concurrent delivery settled it).
    async fn settle(
        &self,
        order: &OrderId,
        lines: &[HeldLine],
        state: ReservationState,
    ) -> Result<bool, RepositoryError> {
        let record = Update::builder()
            .table_name(&self.table)
            .key(attr::PK, s(reservation_key(order)))
            .update_expression("SET #state = :to, #expires = :expires")
            .condition_expression("#state = :held")
            .expression_attribute_names("#state", attr::STATE)
            .expression_attribute_names("#expires", attr::EXPIRES_AT)
            .expression_attribute_values(":to", s(state.as_str()))
            .expression_attribute_values(":expires", n(finished_record_expiry()))
            .expression_attribute_values(":held", s(ReservationState::Held.as_str()))
            .build()
            .map_err(built("building a DynamoDB Update"))?;
        let mut items = vec![TransactWriteItem::builder().update(record).build()];
        // One update per (product, shard).
        let mut moves: HashMap<(ProductId, u16), i64> = HashMap::new();
        for line in lines {
            *moves
                .entry((line.product_id.clone(), line.shard))
                .or_default() += i64::from(line.quantity);
        }
        for ((id, shard), quantity) in moves {
            let back = if state == ReservationState::Released {
                quantity
            } else {
                0
            };
            items.push(shard_update(
                &self.table,
                &id,
                shard,
                back,
                -quantity,
                None,
            )?);
        }
        match crate::transact(&self.client, items).await? {
            Ok(()) => Ok(true),
            Err(reasons) if crate::condition_failed(&reasons, 0) => Ok(false),
            Err(_) => Err(RepositoryError::Corrupt(format!(
                "reservation of order {order}: a stock record is gone or holds fewer reserved units"
            ))),
        }
    }

    /// One attempt at the batch: plans the undecided orders and writes the plan in as few
    /// transactions as fit. Returns the outcomes decided (by index) and the products found
    /// sold out; orders left undecided collided with another writer and are planned again.
    async fn reserve_attempt(
        &self,
        orders: &[(OrderId, Vec<ReserveLine>)],
        undecided: &[usize],
        spread: usize,
    ) -> Result<(Vec<(usize, Reservation)>, Vec<ProductId>), RepositoryError> {
        let ids: Vec<OrderId> = undecided
            .iter()
            .filter_map(|&i| orders.get(i).map(|(id, _)| id.clone()))
            .collect();
        // Every product the undecided orders name, read with their reservation records.
        let products: Vec<ProductId> = undecided
            .iter()
            .filter_map(|&i| orders.get(i))
            .flat_map(|(_, lines)| lines.iter().map(|l| l.product_id.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let (stock, recorded) = self.stock_and_reservations(&products, &ids).await?;
        let mut decided = Vec::new();
        let mut to_plan = Vec::new();
        for &i in undecided {
            let Some((order, _)) = orders.get(i) else {
                continue;
            };
            match recorded.get(order) {
                // Recorded before: a redelivery, or a release that came first.
                Some((ReservationState::Released, _)) => {
                    decided.push((i, Reservation::AlreadyReleased))
                }
                Some(_) => decided.push((i, Reservation::Held)),
                None => to_plan.push(i),
            }
        }
        if to_plan.is_empty() {
            return Ok((decided, Vec::new()));
        }
        let lines: Vec<Vec<ReserveLine>> = to_plan
            .iter()
            .filter_map(|&i| orders.get(i).map(|(_, lines)| lines.clone()))
            .collect();
        let plan = zx_domain::stock::plan(&lines, &stock, spread);
        // Held orders grouped so that each group's transaction fits.
        let mut groups: Vec<Vec<(usize, Vec<HeldLine>)>> = vec![Vec::new()];
        let mut group_keys: BTreeSet<(ProductId, u16)> = BTreeSet::new();
        for (&i, outcome) in to_plan.iter().zip(&plan.outcomes) {
            let Planned::Held(held) = outcome else {
                continue;
            };
            let keys: BTreeSet<(ProductId, u16)> = held
                .iter()
                .map(|l| (l.product_id.clone(), l.shard))
                .collect();
            let size = |g: &Vec<(usize, Vec<HeldLine>)>, k: &BTreeSet<(ProductId, u16)>| {
                g.len() + 1 + k.union(&keys).count()
            };
            if groups
                .last()
                .is_some_and(|g| !g.is_empty() && size(g, &group_keys) > TRANSACTION_ITEMS)
            {
                groups.push(Vec::new());
                group_keys.clear();
            }
            group_keys.extend(keys);
            if let Some(group) = groups.last_mut() {
                group.push((i, held.clone()));
            }
        }
        for group in groups.iter().filter(|g| !g.is_empty()) {
            let mut takes: HashMap<(ProductId, u16), i64> = HashMap::new();
            let mut items = Vec::new();
            for (i, held) in group {
                let Some((order, _)) = orders.get(*i) else {
                    continue;
                };
                for line in held {
                    *takes
                        .entry((line.product_id.clone(), line.shard))
                        .or_default() += i64::from(line.quantity);
                }
                let record = Put::builder()
                    .table_name(&self.table)
                    .item(attr::PK, s(reservation_key(order)))
                    .item(attr::STATE, s(ReservationState::Held.as_str()))
                    .item(
                        attr::LINES,
                        s(serde_json::to_string(held)
                            .map_err(built("serialising a reservation"))?),
                    )
                    .condition_expression("attribute_not_exists(#pk)")
                    .expression_attribute_names("#pk", attr::PK)
                    .build()
                    .map_err(built("building a DynamoDB Put"))?;
                items.push(TransactWriteItem::builder().put(record).build());
            }
            let records = items.len();
            let mut takes: Vec<_> = takes.into_iter().collect();
            takes.sort();
            for ((id, shard), quantity) in takes {
                items.push(shard_update(
                    &self.table,
                    &id,
                    shard,
                    -quantity,
                    quantity,
                    None,
                )?);
            }
            match crate::transact(&self.client, items).await {
                Ok(Ok(())) => decided.extend(group.iter().map(|(i, _)| (*i, Reservation::Held))),
                // A condition failed (another writer took the units, or recorded one of the
                // orders), or the transaction kept colliding: the orders left (and the
                // rejections planned after this group, which depended on it) are planned again.
                Ok(Err(reasons)) => {
                    let record_taken = (0..records).any(|i| crate::condition_failed(&reasons, i));
                    tracing::debug!(record_taken, "reservation batch collided; planning again");
                    return Ok((decided, Vec::new()));
                }
                Err(error) if error.is_transient() => {
                    tracing::debug!(error = %zx_domain::cause_chain(&error), "reservation batch collided; planning again");
                    return Ok((decided, Vec::new()));
                }
                Err(error) => return Err(error),
            }
        }
        for (&i, outcome) in to_plan.iter().zip(&plan.outcomes) {
            if let Planned::Rejected { product_id, reason } = outcome {
                decided.push((
                    i,
                    Reservation::Rejected {
                        product_id: product_id.clone(),
                        reason,
                    },
                ));
            }
        }
        let sold_out = plan
            .left
            .iter()
            .filter(|(_, left)| **left == 0)
            .map(|(id, _)| id.clone())
            .collect();
        Ok((decided, sold_out))
    }
}

/// The product (one of `ids`) and shard a stock item is of.
fn stock_item_of(item: &Item, ids: &[ProductId]) -> Option<(ProductId, u16)> {
    let (id_part, shard) = text(item, attr::PK)?
        .strip_prefix("STOCK#")?
        .rsplit_once('#')?;
    let shard = shard.parse::<u16>().ok()?;
    ids.iter()
        .find(|id| id.as_str() == id_part)
        .map(|id| (id.clone(), shard))
}

/// What a stock read takes of the products table's items.
const STOCK_ATTRIBUTES: &[&str] = &[
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

/// When a finished (released or committed) reservation record expires: the table's TTL deletes
/// it after [`RESERVATION_RETENTION`] (held ones have no expiry).
fn finished_record_expiry() -> i64 {
    Timestamp::now().unix_seconds()
        + i64::try_from(RESERVATION_RETENTION.as_secs()).unwrap_or(i64::MAX / 2)
}

#[async_trait]
impl InventoryRepository for DynamoProductRepository {
    #[tracing::instrument(skip_all, fields(orders = orders.len()))]
    async fn reserve_batch(
        &self,
        orders: &[(OrderId, Vec<ReserveLine>)],
    ) -> Result<BatchReservation, RepositoryError> {
        let mut outcomes: Vec<Option<Reservation>> = orders.iter().map(|_| None).collect();
        let mut sold_out = Vec::new();
        // Concurrent batches of one product start on different shards.
        let mut spread = usize::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        )
        .unwrap_or(0);
        for attempt in 0..ATTEMPTS {
            let undecided: Vec<usize> = (0..orders.len())
                .filter(|&i| outcomes.get(i).is_some_and(Option::is_none))
                .collect();
            if undecided.is_empty() {
                break;
            }
            if attempt > 0 {
                crate::backoff(u32::try_from(attempt).unwrap_or(4)).await;
            }
            let (decided, empty) = self.reserve_attempt(orders, &undecided, spread).await?;
            for (i, outcome) in decided {
                if let Some(slot) = outcomes.get_mut(i) {
                    *slot = Some(outcome);
                }
            }
            sold_out = empty;
            spread = spread.wrapping_add(1);
        }
        let outcomes = outcomes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                RepositoryError::unavailable(
                    "DynamoDB reserve",
                    "the product's stock records kept changing under the batch",
                )
            })?;
        Ok(BatchReservation { outcomes, sold_out })
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn release(&self, order: &OrderId) -> Result<Release, RepositoryError> {
        // Twice at most: a reserve that landed between our read and our tombstone.
        for _ in 0..2 {
            match self
                .reservations(std::slice::from_ref(order))
                .await?
                .remove(order)
            {
                // Released before, or shipped (no restock).
                Some((ReservationState::Released | ReservationState::Committed, _)) => {
                    return Ok(Release::Nothing);
                }
                None => {
                    let tombstone = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .item(attr::PK, s(reservation_key(order)))
                        .item(attr::STATE, s(ReservationState::Released.as_str()))
                        .item(attr::LINES, s("[]"))
                        .item(attr::EXPIRES_AT, n(finished_record_expiry()))
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
                    return if self
                        .settle(order, &lines, ReservationState::Released)
                        .await?
                    {
                        Ok(Release::Restored(products_of(&lines)))
                    } else {
                        Ok(Release::Nothing)
                    };
                }
            }
        }
        Err(RepositoryError::ConcurrentUpdate)
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn commit(&self, order: &OrderId) -> Result<Commit, RepositoryError> {
        let Some((ReservationState::Held, lines)) = self
            .reservations(std::slice::from_ref(order))
            .await?
            .remove(order)
        else {
            return Ok(Commit::Nothing);
        };
        if self
            .settle(order, &lines, ReservationState::Committed)
            .await?
        {
            Ok(Commit::Committed(products_of(&lines)))
        } else {
            Ok(Commit::Nothing)
        }
    }
}

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
    async fn totals(&self, id: &ProductId) -> Result<Stock, RepositoryError> {
        self.read_stock(std::slice::from_ref(id), Vec::new())
            .await?
            .0
            .remove(id)
            .map(|r| r.totals())
            .ok_or(RepositoryError::NotFound)
    }

    /// The counters if `change_id` was already applied as `change` to `id` (a retry whose
    /// tag went stale because its first attempt applied it).
    async fn replayed(
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
