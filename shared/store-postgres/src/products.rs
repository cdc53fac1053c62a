//! Products on Postgres: the `products` table of the products schema. Listings are keyset
//! pages over `(created_at, product_id)` descending, served by partial indexes that leave out
//! soft-deleted rows; search uses `strpos` on lower-cased text, so `%` and `_` are literal.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::PgSchema;
use zx_domain::{
    CategoryId, Cursor, Description, ImageUrl, Page, Price, Product, ProductId, ProductName,
    ProductQuery, ProductReader, ProductWriter, RepositoryError, Stock, StockChange, StockChangeId,
    StockWriter, Timestamp,
};

const COLUMNS: &str = "product_id, name, description, price, category_id, images, available, reserved, \
                       created_at, updated_at, deleted_at, version";

/// The catalogue tables of one schema.
#[derive(Debug, Clone)]
pub struct PgProductRepository {
    pool: PgPool,
    /// `"<schema>".products`
    products: String,
    /// `"<schema>".stock_changes`
    changes: String,
    /// `"<schema>".reservations`
    reservations: String,
}

impl PgProductRepository {
    pub fn new(pool: PgPool, schema: &PgSchema) -> Self {
        Self {
            pool,
            products: crate::qualified(schema, "products"),
            changes: crate::qualified(schema, "stock_changes"),
            reservations: crate::qualified(schema, "reservations"),
        }
    }
}

fn db(operation: &'static str) -> impl Fn(sqlx::Error) -> RepositoryError {
    move |e| crate::db_error(operation, e)
}

fn product_from_row(row: &PgRow) -> Result<Product, RepositoryError> {
    let corrupt = |name: &str, e: String| RepositoryError::Corrupt(format!("{name}: {e}"));
    let text = |name: &str| {
        row.try_get::<String, _>(name)
            .map_err(|e| corrupt(name, e.to_string()))
    };
    let int = |name: &str| {
        row.try_get::<i64, _>(name)
            .map_err(|e| corrupt(name, e.to_string()))
    };
    let at = |name: &str| {
        row.try_get::<time::OffsetDateTime, _>(name)
            .map(Timestamp::from_datetime)
            .map_err(|e| corrupt(name, e.to_string()))
    };
    let images: Vec<String> = row
        .try_get("images")
        .map_err(|e| corrupt("images", e.to_string()))?;
    let deleted_at: Option<time::OffsetDateTime> = row
        .try_get("deleted_at")
        .map_err(|e| corrupt("deleted_at", e.to_string()))?;
    Ok(Product {
        id: ProductId::parse(&text("product_id")?).map_err(|e| corrupt("product_id", e))?,
        name: ProductName::parse(&text("name")?).map_err(|e| corrupt("name", e))?,
        description: Description::parse(&text("description")?)
            .map_err(|e| corrupt("description", e))?,
        price: Price::from_minor(int("price")?).map_err(|e| corrupt("price", e))?,
        category: CategoryId::parse(&text("category_id")?)
            .map_err(|e| corrupt("category_id", e))?,
        images: images
            .iter()
            .map(|url| ImageUrl::from_stored(url).map_err(|e| corrupt("images", e)))
            .collect::<Result<_, _>>()?,
        stock: Stock {
            available: int("available")?,
            reserved: int("reserved")?,
        },
        created_at: at("created_at")?,
        updated_at: at("updated_at")?,
        deleted_at: deleted_at.map(Timestamp::from_datetime),
        version: u64::try_from(int("version")?).map_err(|e| corrupt("version", e.to_string()))?,
    })
}

fn version(v: u64) -> Result<i64, RepositoryError> {
    i64::try_from(v).map_err(|_| RepositoryError::Corrupt(format!("version {v} out of range")))
}

fn image_texts(product: &Product) -> Vec<String> {
    product
        .images
        .iter()
        .map(|i| i.as_str().to_owned())
        .collect()
}

#[async_trait]
impl ProductReader for PgProductRepository {
    async fn find_product(&self, id: &ProductId) -> Result<Option<Product>, RepositoryError> {
        sqlx::query(&format!(
            "select {COLUMNS} from {} where product_id = $1",
            self.products
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("Postgres select product"))?
        .as_ref()
        .map(product_from_row)
        .transpose()
    }

    async fn find_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepositoryError> {
        let ids: Vec<&str> = ids.iter().map(ProductId::as_str).collect();
        sqlx::query(&format!(
            "select {COLUMNS} from {} where product_id = any($1)",
            self.products
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres select products"))?
        .iter()
        .map(product_from_row)
        .collect()
    }

    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, RepositoryError> {
        let limit = query.limit.get();
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from {products}
             where deleted_at is null
               and ($1::text is null or category_id = $1)
               and ($2::bigint is null or price >= $2)
               and ($3::bigint is null or price <= $3)
               and ($4::text is null or strpos(lower(name), $4) > 0 or strpos(lower(description), $4) > 0)
               and ($5::timestamptz is null or (created_at, product_id) < ($5, $6))
             order by created_at desc, product_id desc
             limit $7",
            products = self.products
        ))
        .bind(query.category.as_ref().map(CategoryId::as_str))
        .bind(query.min_price.map(Price::minor))
        .bind(query.max_price.map(Price::minor))
        .bind(query.search.as_ref().map(|t| t.as_str()))
        .bind(query.after.as_ref().map(|c| c.created_at.as_datetime()))
        .bind(query.after.as_ref().map(|c| c.id.as_str()).unwrap_or(""))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres list products"))?;
        let mut items = rows
            .iter()
            .map(product_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(Cursor::after)
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

#[async_trait]
impl ProductWriter for PgProductRepository {
    async fn create_product(&self, product: &Product) -> Result<(), RepositoryError> {
        // A retried create finds its own row (same id and creation time) and succeeds.
        let result = sqlx::query(&format!(
            "insert into {} ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             on conflict (product_id) do nothing",
            self.products
        ))
        .bind(product.id.as_str())
        .bind(product.name.as_str())
        .bind(product.description.as_str())
        .bind(product.price.minor())
        .bind(product.category.as_str())
        .bind(image_texts(product))
        .bind(product.stock.available)
        .bind(product.stock.reserved)
        .bind(product.created_at.as_datetime())
        .bind(product.updated_at.as_datetime())
        .bind(product.deleted_at.map(|t| t.as_datetime()))
        .bind(version(product.version)?)
        .execute(&self.pool)
        .await
        .map_err(db("Postgres insert product"))?;
        if result.rows_affected() == 1 {
            return Ok(());
        }
        let existing: Option<time::OffsetDateTime> = sqlx::query_scalar(&format!(
            "select created_at from {} where product_id = $1",
            self.products
        ))
        .bind(product.id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("Postgres select product"))?;
        match existing {
            Some(at) if Timestamp::from_datetime(at) == product.created_at => Ok(()),
            _ => Err(RepositoryError::ConcurrentUpdate),
        }
    }

    async fn update_product(
        &self,
        current: &Product,
        next: &Product,
    ) -> Result<(), RepositoryError> {
        let result = sqlx::query(&format!(
            "update {} set name = $3, description = $4, price = $5, category_id = $6,
                 images = $7, updated_at = $8, deleted_at = $9, version = $10
             where product_id = $1 and version = $2",
            self.products
        ))
        .bind(current.id.as_str())
        .bind(version(current.version)?)
        .bind(next.name.as_str())
        .bind(next.description.as_str())
        .bind(next.price.minor())
        .bind(next.category.as_str())
        .bind(image_texts(next))
        .bind(next.updated_at.as_datetime())
        .bind(next.deleted_at.map(|t| t.as_datetime()))
        .bind(version(next.version)?)
        .execute(&self.pool)
        .await
        .map_err(db("Postgres update product"))?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(RepositoryError::ConcurrentUpdate)
        }
    }
}

fn stock_from_row(row: &PgRow) -> Result<Stock, RepositoryError> {
    let get = |name: &str| {
        row.try_get::<i64, _>(name)
            .map_err(|e| RepositoryError::Corrupt(format!("{name}: {e}")))
    };
    Ok(Stock {
        available: get("available")?,
        reserved: get("reserved")?,
    })
}

#[async_trait]
impl StockWriter for PgProductRepository {
    /// One transaction: record the change id (a retry finds it and changes nothing), then
    /// update the counter only if the product is live and the result stays within bounds.
    async fn change_stock(
        &self,
        id: &ProductId,
        change: StockChange,
        change_id: &StockChangeId,
    ) -> Result<Stock, RepositoryError> {
        let (sql, value) = match change {
            StockChange::Set(value) if value < 0 => return Err(RepositoryError::InsufficientStock),
            StockChange::Set(value) if value > Stock::MAX_UNITS => {
                return Err(RepositoryError::StockLimitExceeded);
            }
            StockChange::Adjust(delta) if delta > Stock::MAX_UNITS => {
                return Err(RepositoryError::StockLimitExceeded);
            }
            StockChange::Adjust(delta) if delta < -Stock::MAX_UNITS => {
                return Err(RepositoryError::InsufficientStock);
            }
            StockChange::Set(value) => ("$2", value),
            StockChange::Adjust(delta) => ("available + $2", delta),
        };
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
            tx.rollback().await.map_err(db("Postgres rollback"))?;
            // Applied before; a retry if it names the same change (rows recorded before the
            // change was stored, migration 0003, match on the product alone). One round trip
            // for the verdict and the counters.
            let row = sqlx::query(&format!(
                "select c.product_id = $2 and (c.change is null or c.change = $3) as same,
                        p.available, p.reserved
                 from {} c left join {} p on p.product_id = c.product_id
                 where c.change_id = $1",
                self.changes, self.products
            ))
            .bind(change_id.as_str())
            .bind(id.as_str())
            .bind(change.fingerprint())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("Postgres select stock change"))?;
            let same = row.as_ref().and_then(|r| r.try_get::<bool, _>("same").ok());
            let (Some(row), Some(true)) = (row, same) else {
                return Err(RepositoryError::IdempotencyKeyReused);
            };
            tracing::info!(product_id = %id, "stock change already applied");
            return match row.try_get::<Option<i64>, _>("available") {
                Ok(Some(_)) => stock_from_row(&row),
                Ok(None) => Err(RepositoryError::NotFound),
                Err(e) => Err(RepositoryError::Corrupt(format!("available: {e}"))),
            };
        }
        let row = sqlx::query(&format!(
            "update {} set available = {sql}
             where product_id = $1 and deleted_at is null and {sql} between 0 and $3
             returning available, reserved",
            self.products
        ))
        .bind(id.as_str())
        .bind(value)
        .bind(Stock::MAX_UNITS)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db("Postgres update stock"))?;
        if let Some(row) = row {
            let stock = stock_from_row(&row)?;
            tx.commit().await.map_err(db("Postgres commit"))?;
            return Ok(stock);
        }
        tx.rollback().await.map_err(db("Postgres rollback"))?;
        // Nothing updated: a missing or deleted product, or a result out of bounds.
        let live: Option<bool> = sqlx::query_scalar(&format!(
            "select deleted_at is null from {} where product_id = $1",
            self.products
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("Postgres select product"))?;
        match (live, change) {
            (Some(true), StockChange::Adjust(delta)) if delta > 0 => {
                Err(RepositoryError::StockLimitExceeded)
            }
            (Some(true), _) => Err(RepositoryError::InsufficientStock),
            _ => Err(RepositoryError::NotFound),
        }
    }
}

#[async_trait]
impl zx_domain::InventoryRepository for PgProductRepository {
    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn reserve(
        &self,
        order: &zx_domain::OrderId,
        lines: &[zx_domain::ReserveLine],
    ) -> Result<zx_domain::Reservation, RepositoryError> {
        use zx_domain::{Reservation, ReservationState};
        let mut sorted = lines.to_vec();
        // One lock order for every transaction: no deadlocks between two orders.
        sorted.sort_by(|a, b| a.product_id.cmp(&b.product_id));
        let lines_json = serde_json::to_string(&sorted)
            .map_err(|e| RepositoryError::failed("serialising a reservation", e))?;
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        let recorded = sqlx::query(&format!(
            "insert into {} (order_id, state, lines) values ($1, 'held', $2)
             on conflict (order_id) do nothing",
            self.reservations
        ))
        .bind(order.as_str())
        .bind(&lines_json)
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres insert reservation"))?;
        if recorded.rows_affected() == 0 {
            tx.rollback().await.map_err(db("Postgres rollback"))?;
            let state: String = sqlx::query_scalar(&format!(
                "select state from {} where order_id = $1",
                self.reservations
            ))
            .bind(order.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(db("Postgres select reservation"))?;
            return match ReservationState::parse(&state).map_err(RepositoryError::Corrupt)? {
                ReservationState::Held | ReservationState::Committed => Ok(Reservation::Held),
                ReservationState::Released => Ok(Reservation::AlreadyReleased),
            };
        }
        for line in &sorted {
            let quantity = i64::from(line.quantity);
            let updated = sqlx::query(&format!(
                "update {} set available = available - $2, reserved = reserved + $2
                 where product_id = $1 and deleted_at is null and available >= $2",
                self.products
            ))
            .bind(line.product_id.as_str())
            .bind(quantity)
            .execute(&mut *tx)
            .await
            .map_err(db("Postgres reserve stock"))?;
            if updated.rows_affected() == 0 {
                tx.rollback().await.map_err(db("Postgres rollback"))?;
                let live: Option<bool> = sqlx::query_scalar(&format!(
                    "select deleted_at is null from {} where product_id = $1",
                    self.products
                ))
                .bind(line.product_id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(db("Postgres select product"))?;
                return Ok(Reservation::Rejected {
                    product_id: line.product_id.clone(),
                    reason: if live == Some(true) {
                        "out_of_stock"
                    } else {
                        "unavailable"
                    },
                });
            }
        }
        tx.commit().await.map_err(db("Postgres commit"))?;
        Ok(Reservation::Held)
    }

    #[tracing::instrument(skip_all, fields(order_id = %order))]
    async fn release(
        &self,
        order: &zx_domain::OrderId,
    ) -> Result<zx_domain::Release, RepositoryError> {
        use zx_domain::{Release, ReservationState};
        // Twice at most: a reserve that committed between our read and our tombstone.
        for _ in 0..2 {
            let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
            match self.locked_reservation(&mut tx, order).await? {
                Some((ReservationState::Held, lines)) => {
                    let counters = "available = available + $2, reserved = reserved - $2";
                    self.settle_reservation(
                        tx,
                        order,
                        &lines,
                        counters,
                        ReservationState::Released,
                    )
                    .await?;
                    return Ok(Release::Restored(
                        lines.into_iter().map(|l| l.product_id).collect(),
                    ));
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
    async fn commit(
        &self,
        order: &zx_domain::OrderId,
    ) -> Result<zx_domain::Commit, RepositoryError> {
        use zx_domain::{Commit, ReservationState};
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        match self.locked_reservation(&mut tx, order).await? {
            Some((ReservationState::Held, lines)) => {
                let counters = "reserved = reserved - $2";
                self.settle_reservation(tx, order, &lines, counters, ReservationState::Committed)
                    .await?;
                Ok(Commit::Committed(
                    lines.into_iter().map(|l| l.product_id).collect(),
                ))
            }
            _ => {
                tx.rollback().await.map_err(db("Postgres rollback"))?;
                Ok(Commit::Nothing)
            }
        }
    }
}

impl PgProductRepository {
    /// The order's reservation (state and lines), locked until `tx` ends.
    async fn locked_reservation(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        order: &zx_domain::OrderId,
    ) -> Result<Option<(zx_domain::ReservationState, Vec<zx_domain::ReserveLine>)>, RepositoryError>
    {
        let corrupt = |e: String| RepositoryError::Corrupt(format!("reservation: {e}"));
        let row = sqlx::query(&format!(
            "select state, lines from {} where order_id = $1 for update",
            self.reservations
        ))
        .bind(order.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db("Postgres select reservation"))?;
        row.map(|row| {
            let state: String = row.try_get("state").map_err(|e| corrupt(e.to_string()))?;
            let lines: String = row.try_get("lines").map_err(|e| corrupt(e.to_string()))?;
            Ok((
                zx_domain::ReservationState::parse(&state).map_err(corrupt)?,
                serde_json::from_str(&lines).map_err(|e| corrupt(e.to_string()))?,
            ))
        })
        .transpose()
    }

    /// Applies `counters` (an SQL `set` list, `$2` the line's quantity) to every line's
    /// product, marks the reservation `state`, and commits `tx`.
    async fn settle_reservation(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        order: &zx_domain::OrderId,
        lines: &[zx_domain::ReserveLine],
        counters: &str,
        state: zx_domain::ReservationState,
    ) -> Result<(), RepositoryError> {
        for line in lines {
            sqlx::query(&format!(
                "update {} set {counters} where product_id = $1",
                self.products
            ))
            .bind(line.product_id.as_str())
            .bind(i64::from(line.quantity))
            .execute(&mut *tx)
            .await
            .map_err(db("Postgres move reserved stock"))?;
        }
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
}
