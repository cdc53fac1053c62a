//! Attribute values in and out of DynamoDB items, once for every adapter.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use zx_domain::RepositoryError;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// A string attribute.
pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The string attribute `name`, if the item has one.
pub(crate) fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

/// The number attribute `name`, if the item has one that fits an `i64`.
pub(crate) fn number(item: &Item, name: &str) -> Option<i64> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// Strict reads of one kind of item (`"order"`, `"user"`...): a missing or mistyped attribute
/// is a corrupt item, named in the error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strict(pub &'static str);

impl Strict {
    /// A corrupt item of this kind: `detail` about attribute `name`.
    pub(crate) fn corrupt(self, name: &str, detail: impl std::fmt::Display) -> RepositoryError {
        RepositoryError::Corrupt(format!("{} item, {name}: {detail}", self.0))
    }

    pub(crate) fn text<'a>(self, item: &'a Item, name: &str) -> Result<&'a str, RepositoryError> {
        text(item, name).ok_or_else(|| self.corrupt(name, "lacks a string"))
    }

    pub(crate) fn number(self, item: &Item, name: &str) -> Result<i64, RepositoryError> {
        number(item, name).ok_or_else(|| self.corrupt(name, "lacks a number"))
    }

    /// A non-negative number (a version, an epoch).
    pub(crate) fn count(self, item: &Item, name: &str) -> Result<u64, RepositoryError> {
        u64::try_from(self.number(item, name)?).map_err(|_| self.corrupt(name, "is negative"))
    }

    /// The string attribute `name`, as the JSON of a `T`.
    pub(crate) fn json<T: serde::de::DeserializeOwned>(
        self,
        item: &Item,
        name: &str,
    ) -> Result<T, RepositoryError> {
        serde_json::from_str(self.text(item, name)?).map_err(|e| self.corrupt(name, e))
    }

    /// The string attribute `name`, parsed by `parse`.
    pub(crate) fn parsed<T>(
        self,
        item: &Item,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, RepositoryError> {
        parse(self.text(item, name)?).map_err(|e| self.corrupt(name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reads_name_the_item_and_the_attribute() {
        let item = Item::from([
            ("a".to_owned(), s("x")),
            ("b".to_owned(), n(-3)),
            ("c".to_owned(), n(7)),
        ]);
        let order = Strict("order");
        assert_eq!(order.text(&item, "a").unwrap(), "x");
        assert_eq!(order.number(&item, "b").unwrap(), -3);
        assert_eq!(order.count(&item, "c").unwrap(), 7);
        let missing = order.text(&item, "b").unwrap_err().to_string();
        assert!(missing.contains("order item, b"), "{missing}");
        assert!(order.count(&item, "b").is_err());
        assert!(number(&item, "a").is_none());
        assert!(
            order
                .parsed(&item, "a", |_| Err::<(), _>("no".into()))
                .is_err()
        );
    }
}
