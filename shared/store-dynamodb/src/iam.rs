//! The IAM actions each repository calls, by role: what a function using it must be granted
//! (`zx_app::permissions` maps a function's needs to these). `TransactWriteItems` is not an IAM
//! action: each item is authorised as its own `PutItem`, `UpdateItem`, `DeleteItem`. A `Query`
//! grant covers the table's indexes too. The test below reads this crate's source and fails
//! when a module calls an action its lists do not name.

pub const USERS_READ: &[&str] = &["dynamodb:GetItem"];
pub const USERS_WRITE: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
];

/// Replacing a password hash at login: one `UpdateItem` (the template limits it to the user
/// items and to `passwordHash`, `version`, `updatedAt`).
pub const USERS_REHASH: &[&str] = &["dynamodb:UpdateItem"];

/// Sessions (refresh tokens, users table), by what a function does with them. Starting one
/// stores it.
pub const SESSIONS_START: &[&str] = &["dynamodb:PutItem"];
/// Rotating reads the session, updates it with a condition check on the user item, and revokes
/// it on a replay.
pub const SESSIONS_ROTATE: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:UpdateItem",
    "dynamodb:ConditionCheckItem",
];
/// Ending reads the session and revokes it.
pub const SESSIONS_END: &[&str] = &["dynamodb:GetItem", "dynamodb:UpdateItem"];
/// Checking an access token's standing reads the session and the user's epoch and role.
pub const SESSIONS_CHECK: &[&str] = &["dynamodb:GetItem"];

pub const CATALOGUE_READ: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
];
pub const CATALOGUE_WRITE: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
];
/// Reservations: reserve (every shard of a batch's products read at once), release, commit
/// (products table).
pub const INVENTORY: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
];

/// Purging finished reservations: DynamoDB's TTL deletes them (`expiresAt`), nothing to call.
pub const INVENTORY_PURGE: &[&str] = &[];

pub const ORDERS_READ: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
];
pub const ORDERS_WRITE: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:Query",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
];
/// Unsent messages are queried and deleted once sent (they are written with their order); a
/// row that cannot be sent is read and moved (put, delete) to the parked partition and back.
pub const OUTBOX: &[&str] = &[
    "dynamodb:Query",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
];

/// Leading keys of the users table's items, for IAM's `dynamodb:LeadingKeys` (the functions
/// that handle sessions are granted item by item: they can never write a user item).
pub const USER_ITEMS: &str = "USER#*";
pub const EMAIL_ITEMS: &str = "EMAIL#*";
pub const SESSION_ITEMS: &str = "SESSION#*";

/// What the rehash's `UpdateItem` may touch (`dynamodb:Attributes`): nothing else of a user.
pub const REHASH_ATTRIBUTES: &[&str] = &["pk", "passwordHash", "version", "updatedAt"];

/// The health check's `DescribeTable`.
pub const HEALTH: &[&str] = &["dynamodb:DescribeTable"];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The IAM actions a module's source calls: client operations, and transaction items.
    fn called(source: &str) -> BTreeSet<String> {
        let flat: String = source.split_whitespace().collect();
        let mut actions = BTreeSet::new();
        for (pattern, action) in [
            (".get_item()", "GetItem"),
            (".batch_get_item()", "BatchGetItem"),
            ("batch_get_items(", "BatchGetItem"),
            (".put_item()", "PutItem"),
            (".update_item()", "UpdateItem"),
            (".delete_item()", "DeleteItem"),
            (".query()", "Query"),
            (".scan()", "Scan"),
            (".describe_table()", "DescribeTable"),
            ("Put::builder()", "PutItem"),
            ("Update::builder()", "UpdateItem"),
            ("Delete::builder()", "DeleteItem"),
            ("ConditionCheck::builder()", "ConditionCheckItem"),
        ] {
            if flat.contains(pattern) {
                actions.insert(format!("dynamodb:{action}"));
            }
        }
        actions
    }

    fn declared(lists: &[&[&str]]) -> BTreeSet<String> {
        lists
            .iter()
            .flat_map(|l| l.iter().map(|a| (*a).to_owned()))
            .collect()
    }

    #[test]
    fn the_leading_keys_are_the_items_keys() {
        use zx_domain::{SessionId, UserId};
        let user = UserId::generate();
        assert!(crate::users::user_key(&user).starts_with(super::USER_ITEMS.trim_end_matches('*')));
        let session = SessionId::generate();
        assert!(
            crate::sessions::session_key(&session)
                .starts_with(super::SESSION_ITEMS.trim_end_matches('*'))
        );
        let users = include_str!("users.rs");
        assert!(users.contains(&format!(
            "\"{}{{email}}\"",
            super::EMAIL_ITEMS.trim_end_matches('*')
        )));
        for attribute in super::REHASH_ATTRIBUTES {
            assert!(users.contains(&format!("\"{attribute}\"")), "{attribute}");
        }
    }

    #[test]
    fn every_call_in_a_repository_is_declared_and_every_declared_action_is_called() {
        use super::*;
        for (module, sources, lists) in [
            (
                "users",
                vec![include_str!("users.rs")],
                vec![USERS_READ, USERS_WRITE, USERS_REHASH],
            ),
            (
                "sessions",
                vec![include_str!("sessions.rs")],
                vec![
                    SESSIONS_START,
                    SESSIONS_ROTATE,
                    SESSIONS_END,
                    SESSIONS_CHECK,
                ],
            ),
            // The catalogue reads its stock through the stock module; reservations sit beside.
            (
                "products+stock+reservations",
                vec![
                    include_str!("products.rs"),
                    include_str!("stock.rs"),
                    include_str!("reservations.rs"),
                ],
                vec![CATALOGUE_READ, CATALOGUE_WRITE, INVENTORY],
            ),
            (
                "orders",
                vec![include_str!("orders.rs")],
                vec![ORDERS_READ, ORDERS_WRITE, OUTBOX],
            ),
            ("lib", vec![include_str!("lib.rs")], vec![HEALTH]),
        ] {
            // Only the code: the unit tests below a module do not run in a function.
            let code: String = sources
                .iter()
                .map(|source| source.split("#[cfg(test)]").next().unwrap_or(source))
                .collect();
            assert_eq!(called(&code), declared(&lists), "{module}.rs");
        }
    }
}
