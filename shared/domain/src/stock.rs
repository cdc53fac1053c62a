//! Stock kept apart from the catalogue, in one or more **shards** per product (a hot product's
//! reservations spread over several records), and the plan of a batch of reservations: which
//! orders are held, from which shards, and what is left. Pure: both adapters plan with it, and
//! it is tested without a store.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{ProductId, ReserveLine};

/// Most shards one product's stock may be split into.
pub const MAX_SHARDS: u16 = 32;

/// One stock record of a product as read: its index, what it holds, and whether new
/// reservations may take from it (a shard beyond the product's current count is retired: it
/// keeps its reserved units until they are released or shipped, and gives its available units
/// to the active shards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u16,
    pub available: i64,
    pub reserved: i64,
    /// Changes with every write of the record (the `ETag` of `GET /stock` is made of these).
    pub version: u64,
}

/// A product's stock as the inventory reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRecords {
    /// Whether the product exists and is not deleted (a deleted product takes no reservation).
    pub live: bool,
    /// How many shards new reservations use (1 to [`MAX_SHARDS`]).
    pub active: u16,
    /// Every stock record the product has (active ones first, by index).
    pub shards: Vec<Shard>,
}

impl StockRecords {
    /// Totals over every shard.
    pub fn totals(&self) -> crate::Stock {
        crate::Stock {
            available: self.shards.iter().map(|s| s.available).sum(),
            reserved: self.shards.iter().map(|s| s.reserved).sum(),
        }
    }

    /// A tag that changes whenever any counter (or the shard count) changes: the `ETag` an
    /// admin sends back as `If-Match` to set the stock.
    pub fn tag(&self) -> String {
        // FNV-1a: an identifier of the state, not a secret.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |value: u64| {
            for byte in value.to_le_bytes() {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(u64::from(self.active));
        for shard in &self.shards {
            eat(u64::from(shard.index));
            eat(shard.version);
            eat(shard.available.unsigned_abs());
            eat(shard.reserved.unsigned_abs());
        }
        format!("\"s{hash:016x}\"")
    }
}

/// A line of a held reservation: units of a product taken from one shard. A reservation of
/// one product may span several shards (when no single shard held enough).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldLine {
    pub product_id: ProductId,
    pub quantity: u32,
    /// Records written before stock was sharded have none: shard 0.
    #[serde(default)]
    pub shard: u16,
}

/// The products held lines are of, each once, in order.
pub fn products_of(lines: &[HeldLine]) -> Vec<ProductId> {
    lines
        .iter()
        .map(|l| l.product_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// What the plan decided for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Planned {
    /// Every line fits: taken from these shards.
    Held(Vec<HeldLine>),
    /// Nothing taken: this product cannot be reserved (`out_of_stock`, or `unavailable` for an
    /// unknown or deleted product).
    Rejected {
        product_id: ProductId,
        reason: &'static str,
    },
}

/// The plan of a batch of reservations against the stock read for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// One per order, in the batch's order.
    pub outcomes: Vec<Planned>,
    /// Units to move from `available` to `reserved`, per (product, shard): one conditional
    /// write each.
    pub takes: BTreeMap<(ProductId, u16), i64>,
    /// Available units left per product (every shard) once the plan is written.
    pub left: BTreeMap<ProductId, i64>,
}

impl Plan {
    /// The products the plan leaves without available units (for the sold-out mark).
    pub fn sold_out(&self) -> Vec<ProductId> {
        self.left
            .iter()
            .filter(|(_, left)| **left == 0)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// Plans a batch: orders are taken in turn, each all or nothing (its lines are one per
/// product, summed by the caller). A line is taken from one shard that holds enough, trying
/// active shards from `spread` on (so concurrent batches of one product start on different
/// shards), else spread over several shards (largest first); only when every shard together
/// holds too little is it out of stock.
pub fn plan(
    orders: &[Vec<ReserveLine>],
    stock: &HashMap<ProductId, StockRecords>,
    spread: usize,
) -> Plan {
    // What each shard still holds as the plan goes: (product, shard) → available.
    let mut remaining: BTreeMap<(ProductId, u16), i64> = BTreeMap::new();
    for (id, records) in stock {
        for shard in &records.shards {
            remaining.insert((id.clone(), shard.index), shard.available.max(0));
        }
    }
    let mut plan = Plan::default();
    for lines in orders {
        let mut tentative = remaining.clone();
        let mut held = Vec::new();
        let mut rejected = None;
        for line in lines {
            let records = stock.get(&line.product_id).filter(|r| r.live);
            let Some(records) = records else {
                rejected = Some((line.product_id.clone(), "unavailable"));
                break;
            };
            match take(&mut tentative, records, line, spread) {
                Some(lines) => held.extend(lines),
                None => {
                    rejected = Some((line.product_id.clone(), "out_of_stock"));
                    break;
                }
            }
        }
        match rejected {
            Some((product_id, reason)) => {
                plan.outcomes.push(Planned::Rejected { product_id, reason })
            }
            None => {
                remaining = tentative;
                for line in &held {
                    *plan
                        .takes
                        .entry((line.product_id.clone(), line.shard))
                        .or_default() += i64::from(line.quantity);
                }
                plan.outcomes.push(Planned::Held(held));
            }
        }
    }
    for ((id, _), available) in &remaining {
        *plan.left.entry(id.clone()).or_default() += available;
    }
    plan
}

/// Takes one line from `remaining`: from one shard if one holds enough, else from several.
fn take(
    remaining: &mut BTreeMap<(ProductId, u16), i64>,
    records: &StockRecords,
    line: &ReserveLine,
    spread: usize,
) -> Option<Vec<HeldLine>> {
    let wanted = i64::from(line.quantity);
    let indexes: Vec<u16> = records.shards.iter().map(|s| s.index).collect();
    let held_by = |remaining: &BTreeMap<(ProductId, u16), i64>, index: u16| {
        remaining
            .get(&(line.product_id.clone(), index))
            .copied()
            .unwrap_or(0)
    };
    // Active shards from `spread` on, then retired ones.
    let active: Vec<u16> = indexes
        .iter()
        .copied()
        .filter(|i| *i < records.active)
        .collect();
    let mut order: Vec<u16> = Vec::with_capacity(indexes.len());
    if !active.is_empty() {
        let start = spread % active.len();
        order.extend(active.iter().cycle().skip(start).take(active.len()));
    }
    order.extend(indexes.iter().copied().filter(|i| *i >= records.active));
    if let Some(&index) = order.iter().find(|&&i| held_by(remaining, i) >= wanted) {
        *remaining.get_mut(&(line.product_id.clone(), index))? -= wanted;
        return Some(vec![HeldLine {
            product_id: line.product_id.clone(),
            quantity: line.quantity,
            shard: index,
        }]);
    }
    let total: i64 = indexes.iter().map(|&i| held_by(remaining, i)).sum();
    if total < wanted {
        return None;
    }
    let mut by_size = indexes.clone();
    by_size.sort_by_key(|&i| std::cmp::Reverse(held_by(remaining, i)));
    let mut left = wanted;
    let mut lines = Vec::new();
    for index in by_size {
        if left == 0 {
            break;
        }
        let part = held_by(remaining, index).min(left);
        if part == 0 {
            continue;
        }
        *remaining.get_mut(&(line.product_id.clone(), index))? -= part;
        left -= part;
        lines.push(HeldLine {
            product_id: line.product_id.clone(),
            quantity: u32::try_from(part).ok()?,
            shard: index,
        });
    }
    Some(lines)
}

/// Refuses a shard count outside `1..=MAX_SHARDS` (the stores call it before any write).
pub fn check_shard_count(shards: u16) -> Result<(), crate::RepositoryError> {
    if (1..=MAX_SHARDS).contains(&shards) {
        Ok(())
    } else {
        Err(crate::RepositoryError::failed(
            "set stock shards",
            format!("a product has 1 to {MAX_SHARDS} stock shards"),
        ))
    }
}

/// How `total` available units sit over `active` shards when spread evenly (the first shards
/// take the remainder).
pub fn even(total: i64, active: u16) -> Vec<i64> {
    let n = i64::from(active.max(1));
    (0..n)
        .map(|i| total / n + i64::from(i < total % n))
        .collect()
}

/// The change of each shard's available units (by index) that spreads the product's available
/// units evenly over its first `active` shards and empties the retired ones: relative changes,
/// so reservations made meanwhile are never lost (each negative change is a condition
/// `available >= -change` of its write).
pub fn rebalance(records: &StockRecords, active: u16) -> Vec<(u16, i64)> {
    let total: i64 = records.shards.iter().map(|s| s.available).sum();
    let targets = even(total, active);
    let highest = records
        .shards
        .iter()
        .map(|s| s.index + 1)
        .max()
        .unwrap_or(0)
        .max(active);
    (0..highest)
        .map(|index| {
            let current = records
                .shards
                .iter()
                .find(|s| s.index == index)
                .map_or(0, |s| s.available);
            let target = targets.get(usize::from(index)).copied().unwrap_or(0);
            (index, target - current)
        })
        .filter(|(_, change)| *change != 0)
        .collect()
}

/// The changes that add `delta` (possibly negative) units to a product's available stock:
/// added evenly over the active shards, taken from the fullest shards first. `None` when the
/// shards together hold too little.
pub fn adjust(records: &StockRecords, delta: i64) -> Option<Vec<(u16, i64)>> {
    if delta >= 0 {
        let spread = even(delta, records.active);
        return Some(
            spread
                .into_iter()
                .enumerate()
                .filter(|(_, add)| *add != 0)
                .filter_map(|(i, add)| Some((u16::try_from(i).ok()?, add)))
                .collect(),
        );
    }
    let mut left = -delta;
    let mut by_size: Vec<&Shard> = records.shards.iter().collect();
    by_size.sort_by_key(|s| std::cmp::Reverse(s.available));
    let mut changes = Vec::new();
    for shard in by_size {
        if left == 0 {
            break;
        }
        let part = shard.available.max(0).min(left);
        if part > 0 {
            changes.push((shard.index, -part));
            left -= part;
        }
    }
    (left == 0).then_some(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(active: u16, available: &[i64]) -> StockRecords {
        StockRecords {
            live: true,
            active,
            shards: available
                .iter()
                .enumerate()
                .map(|(i, &a)| Shard {
                    index: u16::try_from(i).unwrap(),
                    available: a,
                    reserved: 0,
                    version: 1,
                })
                .collect(),
        }
    }

    fn line(id: &ProductId, quantity: u32) -> ReserveLine {
        ReserveLine {
            product_id: id.clone(),
            quantity,
        }
    }

    #[test]
    fn a_batch_of_one_product_takes_one_shard_until_it_runs_out_then_the_next() {
        let id = ProductId::generate();
        let stock = HashMap::from([(id.clone(), records(4, &[3, 3, 3, 3]))]);
        let orders: Vec<Vec<ReserveLine>> = (0..13).map(|_| vec![line(&id, 1)]).collect();
        let plan = plan(&orders, &stock, 2);
        let held = plan
            .outcomes
            .iter()
            .filter(|o| matches!(o, Planned::Held(_)))
            .count();
        assert_eq!(held, 12);
        assert_eq!(
            plan.outcomes[12],
            Planned::Rejected {
                product_id: id.clone(),
                reason: "out_of_stock"
            }
        );
        // The first three come from shard 2 (the spread), one write for them.
        assert_eq!(plan.takes[&(id.clone(), 2)], 3);
        assert_eq!(plan.takes.values().sum::<i64>(), 12);
        assert_eq!(plan.left[&id], 0);
    }

    #[test]
    fn a_line_no_single_shard_holds_is_split_and_out_of_stock_only_when_all_together_lack() {
        let id = ProductId::generate();
        let stock = HashMap::from([(id.clone(), records(3, &[2, 2, 2]))]);
        let plan = plan(&[vec![line(&id, 5)], vec![line(&id, 2)]], &stock, 0);
        let Planned::Held(lines) = &plan.outcomes[0] else {
            panic!("{plan:?}")
        };
        assert_eq!(lines.iter().map(|l| l.quantity).sum::<u32>(), 5);
        assert_eq!(lines.len(), 3);
        assert!(matches!(plan.outcomes[1], Planned::Rejected { .. }));
        assert_eq!(plan.left[&id], 1);
    }

    #[test]
    fn orders_are_all_or_nothing_and_unknown_or_deleted_products_are_unavailable() {
        let (a, b, gone) = (
            ProductId::generate(),
            ProductId::generate(),
            ProductId::generate(),
        );
        let mut deleted = records(1, &[10]);
        deleted.live = false;
        let stock = HashMap::from([
            (a.clone(), records(1, &[5])),
            (b.clone(), records(1, &[1])),
            (gone.clone(), deleted),
        ]);
        let plan = plan(
            &[
                vec![line(&a, 3), line(&b, 2)],
                vec![line(&a, 1), line(&gone, 1)],
                vec![line(&a, 1), line(&ProductId::generate(), 1)],
                vec![line(&a, 5)],
            ],
            &stock,
            0,
        );
        assert!(
            matches!(&plan.outcomes[0], Planned::Rejected { product_id, reason: "out_of_stock" } if *product_id == b)
        );
        assert!(matches!(
            &plan.outcomes[1],
            Planned::Rejected {
                reason: "unavailable",
                ..
            }
        ));
        assert!(matches!(
            &plan.outcomes[2],
            Planned::Rejected {
                reason: "unavailable",
                ..
            }
        ));
        assert!(matches!(&plan.outcomes[3], Planned::Held(_)));
        assert_eq!(plan.left[&a], 0);
        assert_eq!(plan.left[&b], 1);
    }

    #[test]
    fn retired_shards_give_their_units_and_rebalancing_keeps_every_unit() {
        let mut r = records(2, &[0, 7, 5]);
        r.shards[2].reserved = 4;
        let changes = rebalance(&r, 2);
        let after: Vec<i64> = (0..3u16)
            .map(|i| {
                r.shards[usize::from(i)].available
                    + changes
                        .iter()
                        .filter(|(j, _)| *j == i)
                        .map(|(_, c)| c)
                        .sum::<i64>()
            })
            .collect();
        assert_eq!(after, [6, 6, 0]);
        // Growing to 4: new shards appear with their share.
        let changes = rebalance(&records(1, &[10]), 4);
        assert_eq!(changes, [(0, -7), (1, 3), (2, 2), (3, 2)]);
        assert_eq!(
            adjust(&records(2, &[1, 4]), -5),
            Some(vec![(1, -4), (0, -1)])
        );
        assert_eq!(adjust(&records(2, &[1, 4]), -6), None);
        assert_eq!(
            adjust(&records(3, &[0, 0, 0]), 5),
            Some(vec![(0, 2), (1, 2), (2, 1)])
        );
    }

    #[test]
    fn the_tag_changes_with_any_counter() {
        let a = records(1, &[5]);
        let mut b = a.clone();
        assert_eq!(a.tag(), b.tag());
        b.shards[0].version += 1;
        assert_ne!(a.tag(), b.tag());
        let mut c = a.clone();
        c.active = 2;
        assert_ne!(a.tag(), c.tag());
    }
}
