//! Placing an order: validated, priced from the catalogue, stored with its outbox rows under
//! an idempotency key, then its messages sent.

use super::*;

/// A new order as the customer asked for it (lines already validated for shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub lines: Vec<(ProductId, u32)>,
    pub shipping_address: Option<ShippingAddress>,
}

impl OrderRequest {
    /// One line per product, quantities summed, in product id order.
    pub fn normalised(&self) -> Vec<(ProductId, u32)> {
        let mut summed: BTreeMap<&ProductId, u32> = BTreeMap::new();
        for (id, quantity) in &self.lines {
            let entry = summed.entry(id).or_default();
            *entry = entry.saturating_add(*quantity);
        }
        summed.into_iter().map(|(id, q)| (id.clone(), q)).collect()
    }

    /// A digest of the normalised request: two requests with the same digest ask for the
    /// same order (the same products and quantities, in any order or split, and address).
    pub fn fingerprint(&self) -> String {
        let mut canonical = String::new();
        for (id, quantity) in self.normalised() {
            canonical.push_str(&format!("{id}={quantity};"));
        }
        canonical.push('|');
        if let Some(address) = &self.shipping_address {
            canonical.push_str(address.as_str());
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A placed order, and whether it was placed by an earlier request with the same key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub order: Order,
    pub replayed: bool,
}

async fn replay(
    placement: &Placement,
    record: &IdempotencyRecord,
    fingerprint: &str,
) -> Result<Placed, OrderError> {
    if record.fingerprint != fingerprint {
        return Err(OrderError::KeyReused);
    }
    let order = placement
        .orders
        .find_order(&record.order_id)
        .await?
        .ok_or_else(|| RepositoryError::Corrupt("idempotency record names no order".into()))?;
    Ok(Placed {
        order,
        replayed: true,
    })
}

/// Places an order for `user`: prices and total from the catalogue, stored with its
/// idempotency record and its messages in one atomic write, then the messages are sent. The
/// same key with the same request gives the same order; with another request,
/// [`OrderError::KeyReused`].
#[tracing::instrument(skip_all, fields(user_id = %user))]
pub async fn place_order(
    placement: &Placement,
    user: &UserId,
    key: IdempotencyKey,
    request: &OrderRequest,
) -> Result<Placed, OrderError> {
    let fingerprint = request.fingerprint();
    if let Some(record) = placement.orders.find_idempotency(user, &key).await? {
        return replay(placement, &record, &fingerprint).await;
    }
    let wanted = request.normalised();
    let ids: Vec<ProductId> = wanted.iter().map(|(id, _)| id.clone()).collect();
    // A sale's sold-out product is refused here, before an order is stored and a reserve sent.
    if let Some(views) = &placement.views
        && let Some(product) = views.known_sold_out(&ids).await
    {
        tracing::info!(product_id = %product, "order refused: product known sold out");
        metrics::counter!(metric::ORDERS_REFUSED, "Reason" => "sold_out").increment(1);
        return Err(OrderError::SoldOut(product));
    }
    let found = placement.catalogue.find_products(&ids).await?;
    let mut lines = Vec::with_capacity(wanted.len());
    let mut unknown = Vec::new();
    for (id, quantity) in &wanted {
        match found.iter().find(|p| &p.id == id && p.deleted_at.is_none()) {
            Some(product) => lines.push(OrderLine {
                product_id: id.clone(),
                name: product.name.as_str().to_owned(),
                unit_price: product.price.minor(),
                quantity: *quantity,
            }),
            None => unknown.push(id.clone()),
        }
    }
    if !unknown.is_empty() {
        return Err(OrderError::UnknownProducts(unknown));
    }
    let now = Timestamp::now();
    let order = Order::pending(
        OrderId::generate(),
        user,
        lines,
        request.shipping_address.clone(),
        now,
    )
    .ok_or(OrderError::TotalTooLarge)?;
    let record = IdempotencyRecord {
        user_id: user.clone(),
        key,
        fingerprint: fingerprint.clone(),
        order_id: order.id.clone(),
        expires_at: Timestamp::from_unix_millis(
            now.unix_millis()
                + i64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(24 * 3600 * 1000),
        )
        .unwrap_or(now),
    };
    let outgoing = [messages::reserve(&order), messages::order_created(&order)];
    match placement
        .orders
        .create_order(&order, &record, &outgoing, placement.settings.max_open)
        .await?
    {
        OrderCreation::Created => {}
        OrderCreation::KeyTaken(existing) => {
            return replay(placement, &existing, &fingerprint).await;
        }
        OrderCreation::TooManyOpen => {
            tracing::info!(
                max_open = placement.settings.max_open,
                "order refused: too many open orders"
            );
            metrics::counter!(metric::ORDERS_REFUSED, "Reason" => "open_limit").increment(1);
            return Err(OrderError::TooManyOpen(placement.settings.max_open));
        }
    }
    tracing::info!(order_id = %order.id, total = order.total, lines = order.lines.len(), "order placed");
    metrics::counter!(metric::ORDERS_PLACED).increment(1);
    dispatch(&placement.dispatch, &outgoing).await;
    Ok(Placed {
        order,
        replayed: false,
    })
}
