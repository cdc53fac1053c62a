//! Zhixuan's domain: value types that cannot hold invalid values, entities, and the repository
//! traits the adapters implement. No AWS, database or HTTP types live here.

pub mod error;
pub mod metrics;
pub mod notice;
pub mod order;
pub mod product;
pub mod repository;
pub mod session;
pub mod stock;
pub mod timestamp;
pub mod user;

pub use error::{FieldError, RepositoryError, UniqueField, ValidationErrors, cause_chain};
pub use notice::{AccountNotice, Notifier, OneTimeCode};
pub use order::{
    Commit, Destination, Driver, Envelope, IdempotencyKey, IdempotencyRecord, Order, OrderCursor,
    OrderId, OrderLine, OrderPage, OrderQuery, OrderStatus, OutboxMessage, ParkedRow, Release,
    Reservation, ReservationState, ReserveLine, Row, RowKey, ShippingAddress, StatusChange,
    Unreadable,
};
pub use product::{
    CategoryCount, CategoryId, Cursor, Description, ImageUrl, MAX_EXAMINED, Page, PageLimit, Price,
    Product, ProductId, ProductName, ProductQuery, SearchTerm, Stock, StockChangeId,
    is_cjk_ideograph,
};
pub use repository::{
    BatchReservation, CategoryReader, InventoryRepository, InventoryStore, MessageSender,
    OrderCreation, OrderExpiry, OrderReader, OrderRepository, OrderStore, OrderWriter, Outbox,
    PasswordRehasher, ProductReader, ProductRepository, ProductWriter, Purged,
    RESERVATION_RETENTION, ReservationPurge, STOCK_CHANGE_RETENTION, SessionEnding, SessionReader,
    SessionRepository, SessionRevoker, SessionRotation, SessionRotator, SessionStarter,
    StandingReader, StockChange, StockWriter, UserReader, UserRepository, UserSignIn, UserWriter,
};
pub use session::{
    MAX_SESSION_LIFETIME, Presented, REMEMBERED_TOKENS, Session, SessionId, Standing, TokenHash,
};
pub use timestamp::Timestamp;
pub use user::{Email, Password, PasswordHash, Role, User, UserId, Username};
