//! Stock on Postgres, apart from the catalogue row: `stock (product_id, shard, available,
//! reserved, version)` (migration 0006), one row per shard; `products.stock_shards` says how many
//! shards new reservations use (rows beyond it are retired: they keep their reserved units until
//! released or shipped). Reservations (`reservations`, lines with the shard each was taken
//! from) are the idempotency key of reserve, release and commit.
//!
//! A batch of reservations is one transaction: the records already there are read, the stock
//! rows of every product the batch names are locked in one lock order (product, shard), the
//! batch is planned against them ([`zx_domain::stock::plan`]), and one statement records the
//! held orders and one moves their units.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_trait::async_trait;
use sqlx::{Postgres, Row, Transaction};
use zx_domain::stock::{HeldLine, MAX_SHARDS, Planned, Shard, StockRecords, products_of};
use zx_domain::{
    BatchReservation, Commit, InventoryRepository, OrderId, ProductId, Purged,
    RESERVATION_RETENTION, Release, RepositoryError, Reservation, ReservationPurge,
    ReservationState, ReserveLine, STOCK_CHANGE_RETENTION, Stock, StockChange, StockChangeId,
    StockWriter, Timestamp,
};

use crate::db;
use crate::products::PgProductRepository;

fn corrupt(what: impl std::fmt::Display) -> RepositoryError {
    RepositoryError::Corrupt(format!("stock: {what}"))
}

impl PgProductRepository {
    /// The stock rows of these products, locked until `tx` ends (`for update`, in one lock
    /// order), with whether each product is live and how many shards it uses. A product without
    /// stock rows is left out.
    pub(crate) async fn locked_stock(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ids: &[ProductId],
    ) -> Result<HashMap<ProductId, StockRecords>, RepositoryError> {
        self.query_stock(tx, ids, "for update of s").await
    }

    /// The stock rows of these products as they are (not locked).
    pub(crate) async fn read_stock(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ids: &[ProductId],
    ) -> Result<HashMap<ProductId, StockRecords>, RepositoryError> {
        self.query_stock(tx, ids, "").await
    }

    async fn query_stock(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        ids: &[ProductId],
        lock: &str,
    ) -> Result<HashMap<ProductId, StockRecords>, RepositoryError> {
        let ids: Vec<&str> = ids.iter().map(ProductId::as_str).collect();
        let rows = sqlx::query(&format!(
            "select s.product_id, s.shard, s.available, s.reserved, s.version,
                    p.stock_shards, p.deleted_at is null as live
             from {stock} s join {products} p on p.product_id = s.product_id
             where s.product_id = any($1)
             order by s.product_id, s.shard
             {lock}",
            stock = self.stock,
            products = self.products
        ))
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(db("Postgres lock stock"))?;
        let mut records: HashMap<ProductId, StockRecords> = HashMap::new();
        for row in rows {
            let id = row
                .try_get::<String, _>("product_id")
                .map_err(corrupt)
                .and_then(|id| ProductId::parse(&id).map_err(corrupt))?;
            let shard = Shard {
                index: row
                    .try_get::<i16, _>("shard")
                    .ok()
                    .and_then(|s| u16::try_from(s).ok())
                    .ok_or_else(|| corrupt("shard"))?,
                available: row.try_get("available").map_err(corrupt)?,
                reserved: row.try_get("reserved").map_err(corrupt)?,
                version: row
                    .try_get::<i64, _>("version")
                    .ok()
                    .and_then(|v| u64::try_from(v).ok())
                    .unwrap_or(0),
            };
            let active = row
                .try_get::<i16, _>("stock_shards")
                .ok()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(1)
                .clamp(1, MAX_SHARDS);
            let live: bool = row.try_get("live").map_err(corrupt)?;
            records
                .entry(id)
                .or_insert_with(|| StockRecords {
                    live,
                    active,
                    shards: Vec::new(),
                })
                .shards
                .push(shard);
        }
        Ok(records)
    }

    /// Applies per-shard changes of `available` and `reserved` in one statement.
    async fn apply(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        changes: &BTreeMap<(ProductId, u16), (i64, i64)>,
    ) -> Result<(), RepositoryError> {
        if changes.is_empty() {
            return Ok(());
        }
        let products: Vec<&str> = changes.keys().map(|(id, _)| id.as_str()).collect();
        let shards: Vec<i16> = changes
            .keys()
            .map(|(_, shard)| i16::try_from(*shard).unwrap_or(i16::MAX))
            .collect();
        let available: Vec<i64> = changes.values().map(|(a, _)| *a).collect();
        let reserved: Vec<i64> = changes.values().map(|(_, r)| *r).collect();
        sqlx::query(&format!(
            "update {} s set available = s.available + c.available,
                 reserved = s.reserved + c.reserved, version = s.version + 1
             from unnest($1::text[], $2::int2[], $3::int8[], $4::int8[])
                 as c(product_id, shard, available, reserved)
             where s.product_id = c.product_id and s.shard = c.shard",
            self.stock
        ))
        .bind(&products)
        .bind(&shards)
        .bind(&available)
        .bind(&reserved)
        .execute(&mut **tx)
        .await
        .map_err(db("Postgres move stock"))?;
        Ok(())
    }

    /// The order's reservation (state and lines), locked until `tx` ends.
    async fn locked_reservation(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        order: &OrderId,
    ) -> Result<Option<(ReservationState, Vec<HeldLine>)>, RepositoryError> {
        let row = sqlx::query(&format!(
            "select state, lines from {} where order_id = $1 for update",
            self.reservations
        ))
        .bind(order.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("Postgres select reservation"))?;
        row.map(|row| {
            let state: String = row.try_get("state").map_err(corrupt)?;
            let lines: String = row.try_get("lines").map_err(corrupt)?;
            Ok((
                ReservationState::parse(&state).map_err(corrupt)?,
                serde_json::from_str(&lines).map_err(corrupt)?,
            ))
        })
        .transpose()
    }

    /// Gives a held reservation's units back (`released`) or takes them out for good
    /// (`committed`), flips its record, and commits `tx`.
    async fn settle(
        &self,
        mut tx: Transaction<'_, Postgres>,
        order: &OrderId,
        lines: &[HeldLine],
        state: ReservationState,
    ) -> Result<(), RepositoryError> {
        // The stock rows first, in the one lock order every writer uses.
        self.locked_stock(&mut tx, &products_of(lines)).await?;
        let mut changes: BTreeMap<(ProductId, u16), (i64, i64)> = BTreeMap::new();
        for line in lines {
            let entry = changes
                .entry((line.product_id.clone(), line.shard))
                .or_default();
            let quantity = i64::from(line.quantity);
            if state == ReservationState::Released {
                entry.0 += quantity;
            }
            entry.1 -= quantity;
        }
        self.apply(&mut tx, &changes).await?;
        sqlx::query(&format!(
            "update {} set state = $2, updated_at = now() where order_id = $1",
            self.reservations
        ))
        .bind(order.as_str())
        .bind(state.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres update reservation"))?;
        tx.commit().await.map_err(db("Postgres commit"))
    }

    async fn totals(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &ProductId,
    ) -> Result<Stock, RepositoryError> {
        let row = sqlx::query(&format!(
            "select coalesce(sum(available), 0)::int8 as available,
                    coalesce(sum(reserved), 0)::int8 as reserved
             from {} where product_id = $1",
            self.stock
        ))
        .bind(id.as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(db("Postgres sum stock"))?;
        Ok(Stock {
            available: row.try_get("available").map_err(corrupt)?,
            reserved: row.try_get("reserved").map_err(corrupt)?,
        })
    }

    /// The stock of one live product, locked.
    async fn live_stock(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        id: &ProductId,
    ) -> Result<StockRecords, RepositoryError> {
        self.locked_stock(tx, std::slice::from_ref(id))
            .await?
            .remove(id)
            .filter(|r| r.live)
            .ok_or(RepositoryError::NotFound)
    }
}

#[async_trait]
impl InventoryRepository for PgProductRepository {
    #[tracing::instrument(skip_all, fields(orders = orders.len()))]
    async fn reserve_batch(
        &self,
        orders: &[(OrderId, Vec<ReserveLine>)],
    ) -> Result<BatchReservation, RepositoryError> {
        if orders.is_empty() {
            return Ok(BatchReservation::default());
        }
        let ids: Vec<&str> = orders.iter().map(|(id, _)| id.as_str()).collect();
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        // The stock rows of every product named, locked first: a concurrent delivery of the
        // same order waits here, then finds the record the other wrote.
        let products: Vec<ProductId> = orders
            .iter()
            .flat_map(|(_, lines)| lines.iter().map(|l| l.product_id.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let stock = self.locked_stock(&mut tx, &products).await?;
        // Records there before: a redelivery, or a release that came first.
        let recorded: HashMap<String, String> = sqlx::query(&format!(
            "select order_id, state from {} where order_id = any($1)",
            self.reservations
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await
        .map_err(db("Postgres select reservations"))?
        .iter()
        .filter_map(|row| Some((row.try_get("order_id").ok()?, row.try_get("state").ok()?)))
        .collect();
        let mut outcomes: Vec<Option<Reservation>> = Vec::with_capacity(orders.len());
        let mut to_plan = Vec::new();
        for (i, (order, _)) in orders.iter().enumerate() {
            match recorded
                .get(order.as_str())
                .map(|s| ReservationState::parse(s))
            {
                Some(Ok(ReservationState::Released)) => {
                    outcomes.push(Some(Reservation::AlreadyReleased))
                }
                Some(Ok(_)) => outcomes.push(Some(Reservation::Held)),
                Some(Err(e)) => return Err(corrupt(e)),
                None => {
                    outcomes.push(None);
                    to_plan.push(i);
                }
            }
        }
        let lines: Vec<Vec<ReserveLine>> = to_plan
            .iter()
            .filter_map(|&i| orders.get(i).map(|(_, lines)| lines.clone()))
            .collect();
        let plan = zx_domain::stock::plan(&lines, &stock, 0);
        let mut held_orders: Vec<&str> = Vec::new();
        let mut held_lines: Vec<String> = Vec::new();
        for (&i, outcome) in to_plan.iter().zip(&plan.outcomes) {
            let Some((order, _)) = orders.get(i) else {
                continue;
            };
            let decided = match outcome {
                Planned::Held(lines) => {
                    held_orders.push(order.as_str());
                    held_lines.push(serde_json::to_string(lines).map_err(corrupt)?);
                    Reservation::Held
                }
                Planned::Rejected { product_id, reason } => Reservation::Rejected {
                    product_id: product_id.clone(),
                    reason,
                },
            };
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(decided);
            }
        }
        if !held_orders.is_empty() {
            sqlx::query(&format!(
                "insert into {} (order_id, state, lines)
                 select o, 'held', l from unnest($1::text[], $2::text[]) as r(o, l)",
                self.reservations
            ))
            .bind(&held_orders)
            .bind(&held_lines)
            .execute(&mut *tx)
            .await
            .map_err(db("Postgres insert reservations"))?;
            let changes: BTreeMap<(ProductId, u16), (i64, i64)> = plan
                .takes
                .iter()
                .map(|(key, take)| (key.clone(), (-take, *take)))
                .collect();
            self.apply(&mut tx, &changes).await?;
        }
        tx.commit().await.map_err(db("Postgres commit"))?;
        let outcomes = outcomes
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                RepositoryError::failed("Postgres reserve", "an order was not planned")
            })?;
        let sold_out = plan.sold_out();
        Ok(BatchReservation { outcomes, sold_out })
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn release(&self, order: &OrderId) -> Result<Release, RepositoryError> {
        // Twice at most: a reserve that committed between our read and our tombstone.
        for _ in 0..2 {
            let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
            match self.locked_reservation(&mut tx, order).await? {
                Some((ReservationState::Held, lines)) => {
                    self.settle(tx, order, &lines, ReservationState::Released)
                        .await?;
                    return Ok(Release::Restored(products_of(&lines)));
                }
                // Released before, or shipped (no restock).
                Some(_) => {
                    tx.rollback().await.map_err(db("Postgres rollback"))?;
                    return Ok(Release::Nothing);
                }
                None => {
                    let inserted = sqlx::query(&format!(
                        "insert into {} (order_id, state, lines) values ($1, 'released', '[]')
                         on conflict (order_id) do nothing",
                        self.reservations
                    ))
                    .bind(order.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(db("Postgres insert reservation"))?;
                    tx.commit().await.map_err(db("Postgres commit"))?;
                    if inserted.rows_affected() == 1 {
                        return Ok(Release::Nothing);
                    }
                }
            }
        }
        Err(RepositoryError::ConcurrentUpdate)
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn commit(&self, order: &OrderId) -> Result<Commit, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        match self.locked_reservation(&mut tx, order).await? {
            Some((ReservationState::Held, lines)) => {
                self.settle(tx, order, &lines, ReservationState::Committed)
                    .await?;
                Ok(Commit::Committed(products_of(&lines)))
            }
            _ => {
                tx.rollback().await.map_err(db("Postgres rollback"))?;
                Ok(Commit::Nothing)
            }
        }
    }
}

#[async_trait]
impl ReservationPurge for PgProductRepository {
    /// Two bounded statements: finished reservations past their retention, stock change ids
    /// past theirs. Held reservations stay, whatever their age.
    #[tracing::instrument(skip_all)]
    async fn purge_finished(&self, now: Timestamp, limit: u32) -> Result<Purged, RepositoryError> {
        let before = |retention| now.minus(retention).as_datetime();
        let reservations = self
            .purge_rows(
                &self.reservations,
                "order_id",
                "state in ('released', 'committed') and updated_at < $1",
                before(RESERVATION_RETENTION),
                limit,
            )
            .await?;
        let stock_changes = self
            .purge_rows(
                &self.changes,
                "change_id",
                "applied_at < $1",
                before(STOCK_CHANGE_RETENTION),
                limit,
            )
            .await?;
        Ok(Purged {
            reservations,
            stock_changes,
        })
    }
}

impl PgProductRepository {
    /// Deletes up to `limit` rows of `table` matching `condition` (on `$1`), in one statement.
    async fn purge_rows(
        &self,
        table: &str,
        key: &str,
        condition: &str,
        before: time::OffsetDateTime,
        limit: u32,
    ) -> Result<u64, RepositoryError> {
        let done = sqlx::query(&format!(
            "delete from {table} where {key} in
                 (select {key} from {table} where {condition} limit $2)"
        ))
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("Postgres purge"))?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl StockWriter for PgProductRepository {
    /// One transaction: record the change id (a retry finds it and changes nothing), lock the
    /// product's stock rows, and change them: `{delta}` spread over the shards (added evenly,
    /// taken from the fullest), `{available}` only if the caller's tag is still the stock's.
    async fn change_stock(
        &self,
        id: &ProductId,
        change: StockChange,
        change_id: &StockChangeId,
    ) -> Result<Stock, RepositoryError> {
        change.check_bounds()?;
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        let recorded = sqlx::query(&format!(
            "insert into {} (change_id, product_id, change) values ($1, $2, $3)
             on conflict (change_id) do nothing",
            self.changes
        ))
        .bind(change_id.as_str())
        .bind(id.as_str())
        .bind(change.fingerprint())
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres insert stock change"))?;
        if recorded.rows_affected() == 0 {
            // Applied before; a retry if it names the same change (rows recorded before the
            // change was stored, migration 0003, match on the product alone).
            let same: Option<bool> = sqlx::query_scalar(&format!(
                "select product_id = $2 and (change is null or change = $3) from {}
                 where change_id = $1",
                self.changes
            ))
            .bind(change_id.as_str())
            .bind(id.as_str())
            .bind(change.fingerprint())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("Postgres select stock change"))?;
            if same != Some(true) {
                return Err(RepositoryError::IdempotencyKeyReused);
            }
            tracing::info!(product_id = %id, "stock change already applied");
            let totals = self.totals(&mut tx, id).await?;
            tx.rollback().await.map_err(db("Postgres rollback"))?;
            return Ok(totals);
        }
        let records = self.live_stock(&mut tx, id).await?;
        let totals = records.totals();
        let mut changes: BTreeMap<(ProductId, u16), (i64, i64)> = BTreeMap::new();
        match &change {
            StockChange::Set { available, tag } => {
                if *tag != records.tag() {
                    return Err(RepositoryError::PreconditionFailed);
                }
                let targets = zx_domain::stock::even(*available, records.active);
                for shard in &records.shards {
                    let target = targets.get(usize::from(shard.index)).copied().unwrap_or(0);
                    changes.insert((id.clone(), shard.index), (target - shard.available, 0));
                }
            }
            StockChange::Adjust(delta) => {
                if totals.available.saturating_add(*delta) > Stock::MAX_UNITS {
                    return Err(RepositoryError::StockLimitExceeded);
                }
                for (shard, amount) in zx_domain::stock::adjust(&records, *delta)
                    .ok_or(RepositoryError::InsufficientStock)?
                {
                    changes.insert((id.clone(), shard), (amount, 0));
                }
            }
        }
        self.apply(&mut tx, &changes).await?;
        let totals = self.totals(&mut tx, id).await?;
        tx.commit().await.map_err(db("Postgres commit"))?;
        Ok(totals)
    }

    /// One transaction: the product's stock rows locked, the new ones inserted, every shard's
    /// available units moved so they spread evenly over the active shards, the count stored.
    async fn set_stock_shards(
        &self,
        id: &ProductId,
        shards: u16,
    ) -> Result<StockRecords, RepositoryError> {
        zx_domain::stock::check_shard_count(shards)?;
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        let records = self.live_stock(&mut tx, id).await?;
        let shard_count = i16::try_from(shards).unwrap_or(1);
        sqlx::query(&format!(
            "insert into {} (product_id, shard, available, reserved)
             select $1, generate_series(0, $2 - 1), 0, 0
             on conflict (product_id, shard) do nothing",
            self.stock
        ))
        .bind(id.as_str())
        .bind(shard_count)
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres add stock shards"))?;
        let changes: BTreeMap<(ProductId, u16), (i64, i64)> =
            zx_domain::stock::rebalance(&records, shards)
                .into_iter()
                .map(|(shard, amount)| ((id.clone(), shard), (amount, 0)))
                .collect();
        self.apply(&mut tx, &changes).await?;
        sqlx::query(&format!(
            "update {} set stock_shards = $2 where product_id = $1",
            self.products
        ))
        .bind(id.as_str())
        .bind(shard_count)
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres set stock shards"))?;
        let records = self.live_stock(&mut tx, id).await?;
        tx.commit().await.map_err(db("Postgres commit"))?;
        Ok(records)
    }
}
