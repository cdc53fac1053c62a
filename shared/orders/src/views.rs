//! What clients see of an order.

use std::borrow::Cow;

use serde::Serialize;
use zx_domain::{Order, OrderLine, OrderStatus, StatusChange, Timestamp, UserId};

/// One line of an order, priced by the catalogue when the order was placed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = OrderLine)]
pub struct LineView<'a> {
    pub product_id: &'a str,
    pub name: &'a str,
    pub unit_price: i64,
    pub quantity: u32,
    pub line_total: i64,
}

impl<'a> From<&'a OrderLine> for LineView<'a> {
    fn from(line: &'a OrderLine) -> Self {
        Self {
            product_id: line.product_id.as_str(),
            name: &line.name,
            unit_price: line.unit_price,
            quantity: line.quantity,
            line_total: line.line_total().unwrap_or(i64::MAX),
        }
    }
}

/// An order with its lines (unit prices from the catalogue), total and status history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Order)]
pub struct OrderView<'a> {
    pub order_id: &'a str,
    pub user_id: &'a str,
    pub status: OrderStatus,
    pub items: Vec<LineView<'a>>,
    /// Minor units.
    pub total_amount: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_address: Option<&'a str>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[schema(value_type = Vec<StatusChange>)]
    pub status_history: Cow<'a, [StatusChange]>,
}

impl<'a> OrderView<'a> {
    /// The order as it is now.
    pub fn current(order: &'a Order) -> Self {
        Self {
            order_id: order.id.as_str(),
            user_id: order.user_id.as_str(),
            status: order.status,
            items: order.lines.iter().map(LineView::from).collect(),
            total_amount: order.total,
            shipping_address: order.shipping_address.as_ref().map(|a| a.as_str()),
            created_at: order.created_at,
            updated_at: order.updated_at,
            status_history: Cow::Borrowed(&order.history),
        }
    }

    /// The order as its customer `viewer` sees it: other people in its history (the admins who
    /// moved it) appear as `admin`, without their user ids.
    pub fn for_customer(order: &'a Order, viewer: &UserId) -> Self {
        let own = format!("user:{viewer}");
        let history = order
            .history
            .iter()
            .map(|change| {
                let mut change = change.clone();
                if change.actor != own && change.actor != "system" {
                    change.actor = "admin".into();
                }
                change
            })
            .collect();
        Self {
            status_history: Cow::Owned(history),
            ..Self::current(order)
        }
    }

    /// The order as it was created (status `pending`, its first history entry): what
    /// `POST /orders` answers, the same for every replay of the request, whatever happened to
    /// the order since.
    pub fn as_created(order: &'a Order) -> Self {
        Self {
            status: OrderStatus::Pending,
            updated_at: order.created_at,
            status_history: Cow::Borrowed(order.history.get(..1).unwrap_or(&[])),
            ..Self::current(order)
        }
    }
}
