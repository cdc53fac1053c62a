//! The IAM permissions a function needs, derived from its [`Needs`] and the actions each
//! adapter declares it calls (`zx_store_dynamodb::iam`, `zx_messaging`, `crate::discovery`).
//! Resources are named by their logical ids in `template.yaml`; `<Table>/index/*` stands for a
//! table's indexes. The consistency tests compare this with every function's policy in the
//! template, both ways.

use std::collections::{BTreeMap, BTreeSet};

use zx_store_dynamodb::iam;

use crate::capabilities::{Needs, Use};

/// Resource (logical id, or `<Table>/index/*`) → actions.
pub type Permissions = BTreeMap<String, BTreeSet<&'static str>>;

fn grant(permissions: &mut Permissions, resource: &str, actions: &[&'static str]) {
    if actions.is_empty() {
        return;
    }
    permissions
        .entry(resource.to_owned())
        .or_default()
        .extend(actions.iter().copied());
    // A query may read any index of the table.
    if actions.contains(&"dynamodb:Query") {
        permissions
            .entry(format!("{resource}/index/*"))
            .or_default()
            .insert("dynamodb:Query");
    }
}

fn by_use(
    usage: Use,
    read: &'static [&'static str],
    write: &'static [&'static str],
) -> &'static [&'static str] {
    match usage {
        Use::No => &[],
        Use::Read => read,
        Use::Write => write,
    }
}

/// Everything a function with `needs` calls, and nothing else.
pub fn permissions(needs: &Needs) -> Permissions {
    let mut p = Permissions::new();
    grant(
        &mut p,
        "UsersTable",
        by_use(needs.users, iam::USERS_READ, iam::USERS_WRITE),
    );
    if needs.sign {
        grant(
            &mut p,
            "JwtSigningKeyArn",
            &["kms:GetPublicKey", "kms:Sign"],
        );
    }
    if needs.notify {
        grant(&mut p, "AccountNoticesTopic", zx_messaging::SNS_ACTIONS);
    }
    if needs.rehash {
        grant(&mut p, "UsersTable", iam::USERS_REHASH);
    }
    if needs.sessions.start {
        grant(&mut p, "UsersTable", iam::SESSIONS_START);
    }
    if needs.sessions.rotate {
        grant(&mut p, "UsersTable", iam::SESSIONS_ROTATE);
    }
    if needs.sessions.end {
        grant(&mut p, "UsersTable", iam::SESSIONS_END);
    }
    if needs.sessions.check {
        grant(&mut p, "UsersTable", iam::SESSIONS_CHECK);
    }
    grant(
        &mut p,
        "ProductsTable",
        by_use(needs.products, iam::CATALOGUE_READ, iam::CATALOGUE_WRITE),
    );
    grant(
        &mut p,
        "ProductsTable",
        by_use(needs.inventory, iam::INVENTORY_PURGE, iam::INVENTORY),
    );
    grant(
        &mut p,
        "OrdersTable",
        by_use(needs.orders, iam::ORDERS_READ, iam::ORDERS_WRITE),
    );
    grant(
        &mut p,
        "OrdersTable",
        by_use(needs.outbox, iam::OUTBOX, iam::OUTBOX),
    );
    if needs.health {
        for table in ["UsersTable", "ProductsTable", "OrdersTable"] {
            grant(&mut p, table, iam::HEALTH);
        }
    }
    if needs.sends.inventory_queue {
        grant(&mut p, "InventoryQueue", zx_messaging::SQS_ACTIONS);
    }
    if needs.sends.order_queue {
        grant(&mut p, "OrderQueue", zx_messaging::SQS_ACTIONS);
    }
    if needs.sends.inventory_dlq {
        grant(
            &mut p,
            "InventoryDeadLetterQueue",
            zx_messaging::SQS_ACTIONS,
        );
    }
    if needs.sends.order_dlq {
        grant(&mut p, "OrderDeadLetterQueue", zx_messaging::SQS_ACTIONS);
    }
    if needs.sends.order_events {
        grant(&mut p, "OrderEventsTopic", zx_messaging::SNS_ACTIONS);
    }
    if needs.cache {
        // Resolving CACHE_NAME at cold start.
        grant(&mut p, "Cache", crate::discovery::ACTIONS);
    }
    p
}

/// Every deployed function by binary name with its needs.
pub fn functions() -> Vec<(&'static str, Needs)> {
    let mut all: Vec<(&'static str, Needs)> = crate::functions::HTTP_FUNCTIONS
        .iter()
        .map(|f| (f.name, f.needs))
        .collect();
    all.extend(
        crate::workers::SQS_FUNCTIONS
            .iter()
            .map(|f| (f.name, f.needs)),
    );
    all.push((
        crate::workers::OUTBOX_RELAY_NAME,
        crate::workers::OUTBOX_RELAY,
    ));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalogue_reader_may_not_write_and_queries_reach_the_indexes() {
        let (_, needs) = functions()
            .into_iter()
            .find(|(name, _)| *name == "products-get")
            .unwrap();
        let p = permissions(&needs);
        assert_eq!(
            p.keys().map(String::as_str).collect::<Vec<_>>(),
            ["Cache", "ProductsTable", "ProductsTable/index/*"]
        );
        assert!(!p["ProductsTable"].contains("dynamodb:PutItem"));
        assert_eq!(
            p["ProductsTable/index/*"]
                .iter()
                .copied()
                .collect::<Vec<_>>(),
            ["dynamodb:Query"]
        );
    }
}
