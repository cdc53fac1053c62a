//! Reservations on DynamoDB: a record `RESERVATION#<order id>` (`state`, `lines` with the shard
//! each line was taken from) beside the stock records of [`crate::stock`]. A batch of
//! reservations is planned against the records read (consistently) for it
//! ([`zx_domain::stock::plan`]) and written in one transaction: one conditional update per
//! (product, shard) the batch takes from, plus one record per held order. A rejection writes
//! nothing. Releases and commits settle a record once.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use zx_domain::stock::{HeldLine, Planned, StockRecords, products_of};
use zx_domain::{
    BatchReservation, Commit, InventoryRepository, OrderId, ProductId, RESERVATION_RETENTION,
    Release, RepositoryError, Reservation, ReservationPurge, ReservationState, ReserveLine,
    Timestamp,
};

use crate::item::{Item, n, s, text};
use crate::products::{DynamoProductRepository, product_key};
use crate::stock::*;

pub(crate) fn reservation_key(order: &OrderId) -> String {
    format!("RESERVATION#{order}")
}

/// Where a reservation record stands.
fn parse_reservation(item: &Item) -> Result<(ReservationState, Vec<HeldLine>), RepositoryError> {
    let state = ReservationState::parse(text(item, attr::STATE).unwrap_or_default())
        .map_err(RepositoryError::Corrupt)?;
    let lines = serde_json::from_str(text(item, attr::LINES).unwrap_or("[]"))
        .map_err(|e| RepositoryError::Corrupt(format!("reservation lines: {e}")))?;
    Ok((state, lines))
}

/// When a finished (released or committed) reservation record expires: the table's TTL deletes
/// it after [`RESERVATION_RETENTION`] (held ones have no expiry).
fn finished_record_expiry() -> i64 {
    Timestamp::now().unix_seconds()
        + i64::try_from(RESERVATION_RETENTION.as_secs()).unwrap_or(i64::MAX / 2)
}

impl DynamoProductRepository {
    /// [`Self::stock_for_change`] and the reservation records of `orders`, in one read (a
    /// second only for products of several shards).
    pub(crate) async fn stock_and_reservations(
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
        let sold_out = plan.sold_out();
        Ok((decided, sold_out))
    }
}

/// Finished reservations expire by DynamoDB's TTL: nothing to purge.
impl ReservationPurge for DynamoProductRepository {}

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
                    match crate::conditional("DynamoDB PutItem", tombstone)? {
                        Some(_) => return Ok(Release::Nothing),
                        // Written meanwhile: read it again.
                        None => continue,
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
