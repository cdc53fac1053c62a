//! The products service: catalogue reads (cache-aside) and admin writes, and the inventory
//! endpoints (`/stock`). Handlers are plain async functions over the repository traits.

pub mod cache;
pub mod categories;
pub mod handlers;
pub mod stock;
pub mod views;

pub use cache::{CatalogueCache, CatalogueSettings};
pub use categories::list_categories;
pub use handlers::{create_product, delete_product, get_product, list_products, update_product};
pub use stock::{get_stock, put_stock};
