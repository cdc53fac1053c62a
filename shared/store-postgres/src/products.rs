//! Products on Postgres: the `products` table of the products schema (the catalogue: its stock
//! lives apart, in `stock`, see [`crate::stock`]). Listings are keyset
//! pages over `(created_at, product_id)` descending, served by partial indexes that leave out
//! soft-deleted rows; search uses `strpos` on lower-cased text, so `%` and `_` are literal.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::{PgSchema, db};
use zx_domain::stock::StockRecords;
use zx_domain::{
    CategoryCount, CategoryId, CategoryReader, Cursor, Description, ImageUrl, MAX_EXAMINED, Page,
    Price, Product, ProductId, ProductName, ProductQuery, ProductReader, ProductWriter,
    RepositoryError, Stock, Timestamp,
};

/// The catalogue columns.
const CATALOGUE: &str = "product_id, name, description, price, category_id, images, \
                         created_at, updated_at, deleted_at, version";

/// The catalogue tables of one schema.
#[derive(Debug, Clone)]
pub struct PgProductRepository {
    pub(crate) pool: PgPool,
    /// `"<schema>".products`
    pub(crate) products: String,
    /// `"<schema>".stock_changes`
    pub(crate) changes: String,
    /// `"<schema>".reservations`
    pub(crate) reservations: String,
    /// `"<schema>".stock`
    pub(crate) stock: String,
}

impl PgProductRepository {
    pub fn new(pool: PgPool, schema: &PgSchema) -> Self {
        Self {
            pool,
            products: crate::qualified(schema, "products"),
            changes: crate::qualified(schema, "stock_changes"),
            reservations: crate::qualified(schema, "reservations"),
            stock: crate::qualified(schema, "stock"),
        }
    }

    /// The catalogue columns of `p` and the stock totals over its shards.
    fn columns(&self) -> String {
        format!(
            "p.product_id, p.name, p.description, p.price, p.category_id, p.images,
             p.created_at, p.updated_at, p.deleted_at, p.version,
             (select coalesce(sum(s.available), 0)::int8 from {stock} s
                 where s.product_id = p.product_id) as available,
             (select coalesce(sum(s.reserved), 0)::int8 from {stock} s
                 where s.product_id = p.product_id) as reserved",
            stock = self.stock
        )
    }
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
            "select {} from {} p where p.product_id = $1",
            self.columns(),
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

    async fn stock_records(&self, id: &ProductId) -> Result<Option<StockRecords>, RepositoryError> {
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        let records = self.read_stock(&mut tx, std::slice::from_ref(id)).await?;
        tx.rollback().await.map_err(db("Postgres rollback"))?;
        Ok(records.into_values().next())
    }

    async fn find_products(&self, ids: &[ProductId]) -> Result<Vec<Product>, RepositoryError> {
        let ids: Vec<&str> = ids.iter().map(ProductId::as_str).collect();
        sqlx::query(&format!(
            "select {} from {} p where p.product_id = any($1)",
            self.columns(),
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
        // At most MAX_EXAMINED rows, newest first from the cursor, are examined (the window);
        // the filters pick from them, as DynamoDB's filter does after its `Limit`. The last
        // row of the window is returned along, for the cursor of a partial page.
        let limit = query.limit.get();
        let rows = sqlx::query(&format!(
            "with w as (
                 select {CATALOGUE} from {products}
                 where deleted_at is null
                   and ($1::text is null or category_id = $1)
                   and ($5::timestamptz is null or (created_at, product_id) < ($5, $6))
                 order by created_at desc, product_id desc
                 limit $8),
             m as (
                 select * from w
                 where ($2::bigint is null or price >= $2)
                   and ($3::bigint is null or price <= $3)
                   and ($4::text is null or strpos(lower(name), $4) > 0
                        or strpos(lower(description), $4) > 0)
                 order by created_at desc, product_id desc
                 limit $7),
             s as (
                 select count(*) as examined,
                        (array_agg(created_at order by created_at, product_id))[1] as last_at,
                        (array_agg(product_id order by created_at, product_id))[1] as last_id
                 from w)
             select m.*, 0::int8 as available, 0::int8 as reserved,
                    s.examined, s.last_at, s.last_id
             from s left join m on true
             order by m.created_at desc, m.product_id desc",
            products = self.products
        ))
        .bind(query.category.as_ref().map(CategoryId::as_str))
        .bind(query.min_price.map(Price::minor))
        .bind(query.max_price.map(Price::minor))
        .bind(query.search.as_ref().map(|t| t.as_str()))
        .bind(query.after.as_ref().map(|c| c.created_at.as_datetime()))
        .bind(query.after.as_ref().map(|c| c.id.as_str()).unwrap_or(""))
        .bind(i64::try_from(limit + 1).unwrap_or(i64::MAX))
        .bind(i64::try_from(MAX_EXAMINED).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres list products"))?;
        let corrupt = |e: sqlx::Error| RepositoryError::Corrupt(format!("listing window: {e}"));
        let mut items = Vec::with_capacity(rows.len());
        let mut window: Option<(i64, Option<Cursor>)> = None;
        for row in &rows {
            if window.is_none() {
                let examined: i64 = row.try_get("examined").map_err(corrupt)?;
                let last_at: Option<time::OffsetDateTime> =
                    row.try_get("last_at").map_err(corrupt)?;
                let last_id: Option<String> = row.try_get("last_id").map_err(corrupt)?;
                let last = match (last_at, last_id) {
                    (Some(at), Some(id)) => Some(Cursor {
                        created_at: Timestamp::from_datetime(at),
                        id: ProductId::parse(&id)
                            .map_err(|e| RepositoryError::Corrupt(format!("product id: {e}")))?,
                    }),
                    _ => None,
                };
                window = Some((examined, last));
            }
            // No match in the window: one row of nulls carrying the window's figures.
            let matched: Option<String> = row.try_get("product_id").map_err(corrupt)?;
            if matched.is_some() {
                items.push(product_from_row(row)?);
            }
        }
        let (examined, last_examined) = window.unwrap_or((0, None));
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(Cursor::after)
        } else if usize::try_from(examined).is_ok_and(|n| n >= MAX_EXAMINED) {
            // Stopped at the budget: a partial page, and a cursor after what was examined.
            last_examined
        } else {
            None
        };
        Ok(Page { items, next })
    }
}

#[async_trait]
impl ProductWriter for PgProductRepository {
    /// The catalogue row and the first stock row, in one transaction.
    async fn create_product(&self, product: &Product) -> Result<(), RepositoryError> {
        // A retried create finds its own row (same id and creation time) and succeeds.
        let mut tx = self.pool.begin().await.map_err(db("Postgres begin"))?;
        let result = sqlx::query(&format!(
            "insert into {} ({CATALOGUE}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             on conflict (product_id) do nothing",
            self.products
        ))
        .bind(product.id.as_str())
        .bind(product.name.as_str())
        .bind(product.description.as_str())
        .bind(product.price.minor())
        .bind(product.category.as_str())
        .bind(image_texts(product))
        .bind(product.created_at.as_datetime())
        .bind(product.updated_at.as_datetime())
        .bind(product.deleted_at.map(|t| t.as_datetime()))
        .bind(version(product.version)?)
        .execute(&mut *tx)
        .await
        .map_err(db("Postgres insert product"))?;
        if result.rows_affected() == 1 {
            sqlx::query(&format!(
                "insert into {} (product_id, shard, available, reserved) values ($1, 0, $2, $3)",
                self.stock
            ))
            .bind(product.id.as_str())
            .bind(product.stock.available)
            .bind(product.stock.reserved)
            .execute(&mut *tx)
            .await
            .map_err(db("Postgres insert stock"))?;
            tx.commit().await.map_err(db("Postgres commit"))?;
            return Ok(());
        }
        tx.rollback().await.map_err(db("Postgres rollback"))?;
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

#[async_trait]
impl CategoryReader for PgProductRepository {
    /// One aggregate over the partial category index (live products only).
    #[tracing::instrument(skip_all)]
    async fn categories(&self) -> Result<Vec<CategoryCount>, RepositoryError> {
        let rows = sqlx::query(&format!(
            "select category_id, count(*) as products from {} where deleted_at is null
             group by category_id order by category_id collate \"C\"",
            self.products
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(db("Postgres select categories"))?;
        rows.iter()
            .map(|row| {
                let id: String = row
                    .try_get("category_id")
                    .map_err(db("Postgres categories"))?;
                let products: i64 = row.try_get("products").map_err(db("Postgres categories"))?;
                Ok(CategoryCount {
                    id: CategoryId::parse(&id)
                        .map_err(|e| RepositoryError::Corrupt(format!("category_id: {e}")))?,
                    products: u64::try_from(products).unwrap_or(0),
                })
            })
            .collect()
    }
}
