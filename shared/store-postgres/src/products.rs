//! Products on Postgres: the `products` table of the products schema. Listings are keyset
//! pages over `(created_at, product_id)` descending, served by partial indexes that leave out
//! soft-deleted rows; search uses `strpos` on lower-cased text, so `%` and `_` are literal.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use zx_domain::{
    CategoryId, Cursor, Description, ImageUrl, Page, Price, Product, ProductId, ProductName,
    ProductQuery, ProductReader, ProductWriter, RepositoryError, Stock, StockChange, StockWriter,
    Timestamp,
};

const COLUMNS: &str = "product_id, name, description, price, category_id, images, available, reserved, \
                       created_at, updated_at, deleted_at, version";

/// The catalogue table of one schema.
#[derive(Debug, Clone)]
pub struct PgProductRepository {
    pool: PgPool,
}

impl PgProductRepository {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn unavailable(operation: &'static str) -> impl Fn(sqlx::Error) -> RepositoryError {
    move |e| RepositoryError::unavailable(operation, e)
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
            .map(|url| ImageUrl::parse(url).map_err(|e| corrupt("images", e)))
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
            "select {COLUMNS} from products where product_id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable("Postgres select product"))?
        .as_ref()
        .map(product_from_row)
        .transpose()
    }

    async fn list_products(&self, query: &ProductQuery) -> Result<Page<Product>, RepositoryError> {
        let limit = query.limit.get();
        let rows = sqlx::query(&format!(
            "select {COLUMNS} from products
             where deleted_at is null
               and ($1::text is null or category_id = $1)
               and ($2::bigint is null or price >= $2)
               and ($3::bigint is null or price <= $3)
               and ($4::text is null or strpos(lower(name), $4) > 0 or strpos(lower(description), $4) > 0)
               and ($5::timestamptz is null or (created_at, product_id) < ($5, $6))
             order by created_at desc, product_id desc
             limit $7"
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
        .map_err(unavailable("Postgres list products"))?;
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
        sqlx::query(&format!(
            "insert into products ({COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
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
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => RepositoryError::ConcurrentUpdate,
            _ => RepositoryError::unavailable("Postgres insert product", e),
        })?;
        Ok(())
    }

    async fn update_product(
        &self,
        current: &Product,
        next: &Product,
    ) -> Result<(), RepositoryError> {
        let result = sqlx::query(
            "update products set name = $3, description = $4, price = $5, category_id = $6,
                 images = $7, updated_at = $8, deleted_at = $9, version = $10
             where product_id = $1 and version = $2",
        )
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
        .map_err(unavailable("Postgres update product"))?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(RepositoryError::ConcurrentUpdate)
        }
    }
}

#[async_trait]
impl StockWriter for PgProductRepository {
    async fn change_stock(
        &self,
        id: &ProductId,
        change: StockChange,
    ) -> Result<Stock, RepositoryError> {
        let (sql, value) = match change {
            StockChange::Set(value) if value < 0 => return Err(RepositoryError::InsufficientStock),
            StockChange::Set(value) => ("available = $2", value),
            StockChange::Adjust(delta) => ("available = available + $2", delta),
        };
        let row = sqlx::query(&format!(
            "update products set {sql}
             where product_id = $1 and deleted_at is null and available + (case when $3 then $2 else 0 end) >= 0
             returning available, reserved"
        ))
        .bind(id.as_str())
        .bind(value)
        .bind(matches!(change, StockChange::Adjust(_)))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable("Postgres update stock"))?;
        if let Some(row) = row {
            let get = |name: &str| {
                row.try_get::<i64, _>(name)
                    .map_err(|e| RepositoryError::Corrupt(format!("{name}: {e}")))
            };
            return Ok(Stock {
                available: get("available")?,
                reserved: get("reserved")?,
            });
        }
        // Nothing updated: a missing/deleted product, or not enough stock.
        let live: Option<bool> =
            sqlx::query_scalar("select deleted_at is null from products where product_id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable("Postgres select product"))?;
        match live {
            Some(true) => Err(RepositoryError::InsufficientStock),
            _ => Err(RepositoryError::NotFound),
        }
    }
}
