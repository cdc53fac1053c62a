//! Products and stock: catalogue entries with exact prices (integer minor units), a soft
//! delete, and stock counters; listing queries and opaque, stable cursors.

use std::fmt;

use serde::Serialize;

use crate::Timestamp;

/// A product's opaque identifier: a UUIDv7 in canonical lower-case form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProductId(String);

impl ProductId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().hyphenated().to_string())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        uuid::Uuid::try_parse(text.trim())
            .map(|id| Self(id.hyphenated().to_string()))
            .map_err(|_| "must be a product id (UUID)".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProductId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ProductId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Names one stock change so that a retried request applies it once: a client's
/// `Idempotency-Key` (1–64 characters of `A-Za-z0-9-_.:`), or a fresh random id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StockChangeId(String);

impl StockChangeId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err("must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.' and ':'".into())
        }
    }

    /// This id within `scope` (the caller), so two clients' keys never collide.
    pub fn scoped(&self, scope: &str) -> Self {
        Self(format!("{scope}:{}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category key: 1–64 characters of lower-case letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CategoryId(String);

impl CategoryId {
    pub fn parse(text: &str) -> Result<Self, String> {
        let id = text.trim().to_lowercase();
        let valid = (1..=64).contains(&id.len())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Self(id))
        } else {
            Err("must be 1 to 64 characters of a-z, 0-9, '-' and '_'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category and how many live products it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CategoryCount {
    pub id: CategoryId,
    pub products: u64,
}

/// A price in minor units of the shop's currency (fen for CNY): exact, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Price(i64);

impl Price {
    /// 10 billion yuan in fen: far above any product, far below overflow when summed.
    pub const MAX: i64 = 1_000_000_000_000;

    pub fn from_minor(minor: i64) -> Result<Self, String> {
        if (0..=Self::MAX).contains(&minor) {
            Ok(Self(minor))
        } else {
            Err(format!(
                "must be a whole number of minor units from 0 to {}",
                Self::MAX
            ))
        }
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// A product name: 1–200 characters after trimming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = text.trim();
        let chars = name.chars().count();
        if (1..=200).contains(&chars) && !name.chars().any(char::is_control) {
            Ok(Self(name.to_owned()))
        } else {
            Err("must be 1 to 200 characters without control characters".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A description: at most 5000 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.chars().count() <= 5000 {
            Ok(Self(text.trim().to_owned()))
        } else {
            Err("must be at most 5000 characters".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An image URL: `https://` (or `http://`), at most 2048 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ImageUrl(String);

impl ImageUrl {
    pub const MAX_PER_PRODUCT: usize = 10;

    /// An absolute `http(s)` URL every client can parse: a host name (letters, digits, `-`,
    /// `.`) or a bracketed IPv6 address, an optional port, then a path, query and fragment of
    /// visible ASCII (non-ASCII must be percent-encoded, and every `%` starts an escape). No
    /// user information (`user@`). At most 2048 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = text.trim();
        if url.len() <= 2048 && Self::well_formed(url) {
            Ok(Self(url.to_owned()))
        } else {
            Err("must be an http(s) URL (host, optional port, then visible ASCII) of at most 2048 bytes".into())
        }
    }

    /// An image URL as stored. Stored values were checked by the rules of their time, which
    /// were looser before issue 9 (any `http(s)://` text without whitespace): reads accept
    /// those, so tightening the input rules never turns a stored product into a corrupt one.
    pub fn from_stored(text: &str) -> Result<Self, String> {
        let loose = (text.starts_with("https://") || text.starts_with("http://"))
            && text.len() <= 2048
            && !text.chars().any(char::is_whitespace);
        if loose {
            Ok(Self(text.to_owned()))
        } else {
            Err("not an http(s) URL".into())
        }
    }

    fn well_formed(url: &str) -> bool {
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return false;
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        // (host valid, the text after the host's `:` if there is one)
        let (host_ok, port) = match authority.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((ip, "")) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), None),
                Some((ip, after)) => match after.strip_prefix(':') {
                    Some(port) => (ip.parse::<std::net::Ipv6Addr>().is_ok(), Some(port)),
                    None => return false,
                },
                None => return false,
            },
            None => match authority.split_once(':') {
                Some((host, port)) => (host_name_ok(host), Some(port)),
                None => (host_name_ok(authority), None),
            },
        };
        let port_ok = port.is_none_or(|p| {
            (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok()
        });
        host_ok && port_ok && tail_ok(tail)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A host name: dot-separated labels of ASCII letters, digits and `-`.
fn host_name_ok(host: &str) -> bool {
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A URL's path, query and fragment: visible ASCII without `"<>\^`{|}`, `%` only before two
/// hex digits.
fn tail_ok(tail: &str) -> bool {
    let bytes = tail.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
                if !(hex(i + 1) && hex(i + 2)) {
                    return false;
                }
                i += 3;
            }
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' => return false,
            0x21..=0x7e => i += 1,
            _ => return false,
        }
    }
    true
}

/// Stock counters: `available` can be sold now; `reserved` is held for orders. Both stay
/// within `0..=Stock::MAX_UNITS`, a bound every backend enforces as a condition of the write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Stock {
    pub available: i64,
    pub reserved: i64,
}

impl Stock {
    /// The most units of one product the shop holds: far above any real stock, far below
    /// overflow when counters are added.
    pub const MAX_UNITS: i64 = 1_000_000_000;

    /// A stock level as a client gives it: a whole number from 0 to [`Stock::MAX_UNITS`].
    pub fn parse_units(units: i64) -> Result<i64, String> {
        if (0..=Self::MAX_UNITS).contains(&units) {
            Ok(units)
        } else {
            Err(format!(
                "must be a whole number from 0 to {}",
                Self::MAX_UNITS
            ))
        }
    }
}

/// A catalogue entry. `deleted_at` set means soft-deleted: invisible to reads, kept for orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub id: ProductId,
    pub name: ProductName,
    pub description: Description,
    pub price: Price,
    pub category: CategoryId,
    pub images: Vec<ImageUrl>,
    pub stock: Stock,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    pub version: u64,
}

/// A case-insensitive substring to look for in names and descriptions. Every character is
/// literal (`%` and `_` included): it is never a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

/// Whether `c` is a CJK ideograph (the Unified Ideographs, their extensions and the
/// compatibility ideographs): one of them is a word (茶, tea), so a one-character search is real.
pub fn is_cjk_ideograph(c: char) -> bool {
    matches!(u32::from(c),
        0x3400..=0x4DBF        // Extension A
        | 0x4E00..=0x9FFF      // Unified Ideographs
        | 0xF900..=0xFAFF      // Compatibility Ideographs
        | 0x20000..=0x2A6DF    // Extension B
        | 0x2A700..=0x2EBEF    // Extensions C to F
        | 0x2F800..=0x2FA1F    // Compatibility Supplement
        | 0x30000..=0x323AF) // Extensions G and H
}

impl SearchTerm {
    /// At most this many characters.
    pub const MAX_CHARS: usize = 100;

    /// 2 to 100 characters, or a single CJK ideograph: one Latin letter matches most of a
    /// catalogue and says nothing.
    pub fn parse(text: &str) -> Result<Self, String> {
        let term = text.trim().to_lowercase();
        let mut chars = term.chars();
        let count = term.chars().count();
        let single_ideograph = count == 1 && chars.next().is_some_and(is_cjk_ideograph);
        if (2..=Self::MAX_CHARS).contains(&count) || single_ideograph {
            Ok(Self(term))
        } else {
            Err("must be 2 to 100 characters (or one CJK ideograph, such as 茶)".into())
        }
    }

    /// The lower-cased term.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Page size: 1 to 100, default 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u16);

impl PageLimit {
    pub const DEFAULT: Self = Self(20);
    pub const MAX: u16 = 100;

    /// A whole number of at least 1; larger than [`PageLimit::MAX`] is capped at the maximum.
    pub fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse::<u64>()
            .ok()
            .filter(|&n| n >= 1)
            .map(|n| Self(u16::try_from(n).unwrap_or(u16::MAX).min(Self::MAX)))
            .ok_or_else(|| {
                format!(
                    "must be a whole number of at least 1 (at most {} are returned)",
                    Self::MAX
                )
            })
    }

    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

/// The most index entries one listing request examines (a filter or a search can match few
/// of them): a request never costs more than this, whatever the catalogue's size. When it
/// stops before the page is full, it answers what it found with a cursor after the last entry
/// it examined, and the client pages on.
pub const MAX_EXAMINED: usize = 500;

/// Where a newest-first walk stopped: the last item's creation time and id. Opaque to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: Timestamp,
    pub id: ProductId,
}

impl Cursor {
    pub fn after(product: &Product) -> Self {
        Self {
            created_at: product.created_at,
            id: product.id.clone(),
        }
    }

    /// `<unix millis>.<id>`, hex-encoded so it reads as an opaque token.
    pub fn encode(&self) -> String {
        let millis = self.created_at.as_datetime().unix_timestamp_nanos() / 1_000_000;
        format!("{millis}.{}", self.id)
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Parses a token [`Cursor::encode`] produced. Any other input (including non-ASCII text,
    /// odd lengths and forged contents) is an error, never a panic.
    pub fn decode(token: &str) -> Result<Self, String> {
        let invalid = || "is not a cursor this API returned".to_owned();
        let raw = token.as_bytes();
        if !raw.len().is_multiple_of(2) || raw.len() > 200 {
            return Err(invalid());
        }
        let bytes = raw
            .chunks_exact(2)
            .map(|pair| match pair {
                [high, low] => Some(hex_value(*high)? << 4 | hex_value(*low)?),
                _ => None,
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(invalid)?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (millis, id) = text.split_once('.').ok_or_else(invalid)?;
        let millis: i64 = millis.parse().map_err(|_| invalid())?;
        Ok(Self {
            created_at: Timestamp::from_unix_millis(millis).ok_or_else(invalid)?,
            id: ProductId::parse(id).map_err(|_| invalid())?,
        })
    }
}

/// The value of one ASCII hex digit.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// What to list: filters combine with AND; newest first; at most `limit` items after `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductQuery {
    pub category: Option<CategoryId>,
    pub min_price: Option<Price>,
    pub max_price: Option<Price>,
    pub search: Option<SearchTerm>,
    pub limit: PageLimit,
    pub after: Option<Cursor>,
}

impl Default for ProductQuery {
    fn default() -> Self {
        Self {
            category: None,
            min_price: None,
            max_price: None,
            search: None,
            limit: PageLimit::DEFAULT,
            after: None,
        }
    }
}

impl ProductQuery {
    /// Whether `product` passes the filters (the cursor and limit aside). Adapters that filter
    /// after reading use this, so every backend applies the same rules.
    pub fn matches(&self, product: &Product) -> bool {
        product.deleted_at.is_none()
            && self
                .category
                .as_ref()
                .is_none_or(|c| c == &product.category)
            && self.min_price.is_none_or(|min| product.price >= min)
            && self.max_price.is_none_or(|max| product.price <= max)
            && self.search.as_ref().is_none_or(|term| {
                product.name.as_str().to_lowercase().contains(term.as_str())
                    || product
                        .description
                        .as_str()
                        .to_lowercase()
                        .contains(term.as_str())
            })
    }
}

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_urls_are_urls_every_client_can_parse() {
        for good in [
            "https://img.zhixuan.local/phone-x.jpg",
            "http://cdn.example.com:8080/a/b.png?w=200&h=100#top",
            "https://[2001:db8::1]/x.jpg",
            "https://[::1]:443/x",
            "https://example.com",
            "https://example.com/%E6%99%BA.jpg",
        ] {
            assert!(ImageUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "https://[",
            "https://[::1",
            "https://[zz::1]/x",
            "https://[::1]x/",
            "https://",
            "https://exa mple.com/",
            "https://user@example.com/",
            "https://example..com/",
            "https://example.com:/x",
            "https://example.com:99999/x",
            "https://example.com/智.jpg",
            "https://example.com/%zz",
            "https://example.com/a<b",
            "ftp://example.com/x",
            "javascript:alert(1)",
        ] {
            assert!(ImageUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prices_are_whole_non_negative_minor_units() {
        assert!(Price::from_minor(0).is_ok());
        assert!(Price::from_minor(-1).is_err());
        assert!(Price::from_minor(Price::MAX + 1).is_err());
    }

    #[test]
    fn cursor_round_trips_and_rejects_forgeries() {
        let cursor = Cursor {
            created_at: Timestamp::from_unix_millis(1_795_420_800_123).unwrap(),
            id: ProductId::generate(),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for bad in [
            "",
            "zz",
            "abc",
            "31",
            &"00".repeat(150),
            "a\u{e9}b",
            "\u{e9}\u{e9}",
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_and_terms() {
        assert_eq!(PageLimit::parse("100").unwrap().get(), 100);
        assert_eq!(PageLimit::parse("101").unwrap().get(), 100, "capped");
        assert_eq!(
            PageLimit::parse("99999999999").unwrap().get(),
            100,
            "capped"
        );
        assert!(PageLimit::parse("0").is_err());
        assert!(PageLimit::parse("-5").is_err());
        assert!(PageLimit::parse("ten").is_err());
        assert_eq!(SearchTerm::parse("  50%_OFF ").unwrap().as_str(), "50%_off");
        assert!(CategoryId::parse("Phones").is_ok());
        assert!(CategoryId::parse("phones/../x").is_err());
    }
}
