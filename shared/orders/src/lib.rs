//! The orders service and the inventory side of the saga (SPEC §2 Orders, §3).
//!
//! - [`usecases`]: order placement, transitions, reservation and release, the relay and the
//!   expiry of stale orders, as plain async functions over the repository traits: no HTTP or
//!   SQS types. The HTTP handlers, the workers and the relay all call them.
//! - [`http`]: the five HTTP handlers (parsing, ownership, views).
//! - [`workers`]: one queue message in, a use case called, success or a retryable failure out.

pub mod http;
pub mod messages;
pub mod usecases;
pub mod views;
pub mod workers;

pub use usecases::{
    Dispatch, InventorySteps, OrderError, Placement, Relay, SagaSettings, StaleViews, Transitions,
};
