//! Future supply and preorders: the rules, without IO.
//!
//! A supply line is stock expected at a location (a purchase order, or a transfer in transit).
//! Preorders hold against what of it is not yet promised (`remaining - allocated`); when the
//! stock arrives, those holds become ordinary holds on it, oldest first. Available-to-promise
//! at a time `at` is what is available now plus what supply expected by then has not promised.

use chrono::{DateTime, Duration, Utc};

use super::movement::MAX_QUANTITY;

/// Supply ids starting with this are transfers in transit (made by movements, not by clients).
pub const TRANSFER_PREFIX: &str = "transfer:";

/// How far in the past a new line's `expected_at` may lie (a late delivery is still expected).
pub fn max_past() -> Duration {
    Duration::days(1)
}

/// The supply id of one SKU of a transfer in transit.
pub fn transfer_supply_id(transfer_id: &str, sku: &str) -> String {
    format!("{TRANSFER_PREFIX}{transfer_id}:{sku}")
}

/// A field of a supply line that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

/// Checks the values of a new or replacing supply line (ids are checked by the caller).
pub fn validate(
    supply_id: &str,
    quantity: i64,
    expected_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), Invalid> {
    if supply_id.starts_with(TRANSFER_PREFIX) {
        return Err(Invalid {
            field: "supply_id",
            message: format!("supply ids starting with {TRANSFER_PREFIX:?} are transfers in transit, kept by their movements"),
        });
    }
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(Invalid {
            field: "quantity",
            message: format!("`quantity` must be between 1 and {MAX_QUANTITY}"),
        });
    }
    if expected_at < now - max_past() {
        return Err(Invalid {
            field: "expected_at",
            message: "`expected_at` lies more than a day in the past".into(),
        });
    }
    Ok(())
}

/// The running state of a supply line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineState {
    pub quantity: i64,
    pub received: i64,
    pub remaining: i64,
    pub allocated: i64,
}

impl LineState {
    /// What preorders may still take.
    pub fn free(&self) -> i64 {
        (self.remaining - self.allocated).max(0)
    }
}

/// Why a line cannot be replaced with a new quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BelowPreorders {
    pub remaining: i64,
    pub allocated: i64,
}

/// The line after its expected quantity is replaced: what arrived so far still counts, and it
/// never drops below what preorders hold on it.
pub fn replace(current: LineState, quantity: i64) -> Result<LineState, BelowPreorders> {
    let remaining = quantity.saturating_sub(current.received).max(0);
    if remaining < current.allocated {
        return Err(BelowPreorders {
            remaining,
            allocated: current.allocated,
        });
    }
    Ok(LineState {
        quantity,
        remaining,
        ..current
    })
}

/// The line after `arrived` units came in, and how much of its preorders become ordinary holds
/// (never more than arrived, never more than they hold).
pub fn fill(current: LineState, arrived: i64) -> (LineState, i64) {
    let arrived = arrived.max(0);
    let converted = current.allocated.min(arrived);
    let next = LineState {
        quantity: current.quantity,
        received: current.received.saturating_add(arrived),
        remaining: current.remaining.saturating_sub(arrived).max(0),
        allocated: current.allocated - converted,
    };
    (next, converted)
}

/// Splits `total` over holds in the order given (oldest first): each takes what it holds, up
/// to what is left.
pub fn take_in_order(total: i64, holds: &[i64]) -> Vec<i64> {
    let mut left = total.max(0);
    holds
        .iter()
        .map(|&h| {
            let n = h.max(0).min(left);
            left -= n;
            n
        })
        .collect()
}

/// Where a preorder line is held: amounts per supply line (same order as given) and what
/// is held from stock available now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    pub on_supply: Vec<i64>,
    pub from_stock: i64,
}

/// Spreads a preorder line of `quantity` over the free remaining of open lines (given earliest
/// expected first), then over stock available now. Supply goes first so that stock on the shelf
/// stays sellable to customers who take it today; a preorder customer has agreed to wait.
/// `Err` carries the most a preorder could get.
pub fn spread(quantity: i64, available_now: i64, free: &[i64]) -> Result<Spread, i64> {
    let capacity = free
        .iter()
        .fold(available_now.max(0), |acc, &f| acc.saturating_add(f.max(0)));
    if quantity > capacity || quantity <= 0 {
        return Err(capacity);
    }
    let on_supply = take_in_order(quantity, free);
    let from_stock = quantity - on_supply.iter().sum::<i64>();
    Ok(Spread {
        on_supply,
        from_stock,
    })
}

/// One open line as seen by a date query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub expected_at: Option<DateTime<Utc>>,
    pub free: i64,
}

/// Available-to-promise at `at`: available now plus what open supply expected at or before
/// `at` has not promised to preorders. A line whose arrival is not known never counts.
pub fn atp(available_now: i64, lines: &[Expected], at: DateTime<Utc>) -> i64 {
    lines
        .iter()
        .filter(|l| l.expected_at.is_some_and(|e| e <= at))
        .fold(available_now.max(0), |acc, l| {
            acc.saturating_add(l.free.max(0))
        })
}

/// Where preorders on a cancelled line go: for each allocation (oldest first), `Some` amounts
/// per other line and from stock when it fits entirely, `None` when it does not (its
/// reservation is then released: a preorder is never left backed by nothing).
pub fn relocate(
    allocations: &[i64],
    mut available_now: i64,
    other_free: &[i64],
) -> Vec<Option<Spread>> {
    let mut free: Vec<i64> = other_free.to_vec();
    allocations
        .iter()
        .map(|&a| match spread(a, available_now, &free) {
            Ok(s) => {
                for (f, n) in free.iter_mut().zip(&s.on_supply) {
                    *f -= n;
                }
                available_now -= s.from_stock;
                Some(s)
            }
            Err(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn validation_names_the_field() {
        let now = t("2026-12-01T12:00:00Z");
        let ok = t("2026-12-05T00:00:00Z");
        assert!(validate("PO-1", 5, ok, now).is_ok());
        assert_eq!(
            validate("PO-1", 0, ok, now).expect_err("0").field,
            "quantity"
        );
        assert_eq!(
            validate("PO-1", -3, ok, now).expect_err("<0").field,
            "quantity"
        );
        assert_eq!(
            validate("PO-1", MAX_QUANTITY + 1, ok, now)
                .expect_err("big")
                .field,
            "quantity"
        );
        let old = t("2026-11-30T11:59:59Z");
        assert_eq!(
            validate("PO-1", 5, old, now).expect_err("old").field,
            "expected_at"
        );
        assert!(validate("PO-1", 5, t("2026-11-30T12:00:01Z"), now).is_ok());
        assert_eq!(
            validate("transfer:T1:A", 5, ok, now)
                .expect_err("reserved")
                .field,
            "supply_id"
        );
    }

    #[test]
    fn preorders_take_supply_earliest_first_then_stock() {
        let s = spread(7, 10, &[3, 2]).expect("fits");
        assert_eq!(s.on_supply, vec![3, 2]);
        assert_eq!(s.from_stock, 2);
        assert_eq!(spread(16, 10, &[3, 2]), Err(15));
    }

    #[test]
    fn replace_keeps_what_arrived_and_what_preorders_hold() {
        let line = LineState {
            quantity: 10,
            received: 4,
            remaining: 6,
            allocated: 5,
        };
        assert_eq!(replace(line, 20).expect("grows").remaining, 16);
        assert_eq!(
            replace(line, 8),
            Err(BelowPreorders {
                remaining: 4,
                allocated: 5
            })
        );
    }

    #[test]
    fn atp_counts_supply_expected_by_then() {
        let lines = [
            Expected {
                expected_at: Some(t("2026-12-05T00:00:00Z")),
                free: 4,
            },
            Expected {
                expected_at: None,
                free: 9,
            },
        ];
        assert_eq!(atp(3, &lines, t("2026-12-04T00:00:00Z")), 3);
        assert_eq!(atp(3, &lines, t("2026-12-05T00:00:00Z")), 7);
    }

    proptest! {
        /// A preorder never holds more than stock available now plus free supply, each part
        /// within its own source, and the parts add up to the quantity.
        #[test]
        fn spread_never_exceeds_what_is_there(
            q in -5i64..200, avail in -5i64..100, free in prop::collection::vec(-3i64..50, 0..6)
        ) {
            let cap: i64 = avail.max(0) + free.iter().map(|f| f.max(&0)).sum::<i64>();
            match spread(q, avail, &free) {
                Ok(s) => {
                    prop_assert!(q > 0 && q <= cap);
                    prop_assert!(s.from_stock >= 0 && s.from_stock <= avail.max(0));
                    for (n, f) in s.on_supply.iter().zip(&free) {
                        prop_assert!(*n >= 0 && *n <= (*f).max(0));
                    }
                    prop_assert_eq!(s.on_supply.iter().sum::<i64>() + s.from_stock, q);
                }
                Err(c) => {
                    prop_assert_eq!(c, cap);
                    prop_assert!(q > cap || q <= 0);
                }
            }
        }

        /// Arrivals never convert more than arrived or than preorders held, and the line keeps
        /// allocated <= remaining (the schema's CHECK).
        #[test]
        fn fill_converts_at_most_what_arrived(
            remaining in 0i64..100, alloc_pct in 0i64..=100, arrived in 0i64..150
        ) {
            let allocated = remaining * alloc_pct / 100;
            let line = LineState { quantity: remaining, received: 0, remaining, allocated };
            let (next, converted) = fill(line, arrived);
            prop_assert!(converted <= arrived && converted <= allocated && converted >= 0);
            prop_assert_eq!(converted, allocated.min(arrived));
            prop_assert!(next.allocated <= next.remaining && next.remaining >= 0);
            prop_assert_eq!(next.received, arrived);
            let per_hold = take_in_order(converted, &[allocated / 2, allocated - allocated / 2]);
            prop_assert_eq!(per_hold.iter().sum::<i64>(), converted);
        }

        /// ATP is never negative and never falls as `at` moves later.
        #[test]
        fn atp_is_non_negative_and_monotone(
            avail in -5i64..100,
            lines in prop::collection::vec((prop::option::of(0i64..10), -3i64..50), 0..6),
            a in 0i64..12, b in 0i64..12,
        ) {
            let base = t("2026-12-01T00:00:00Z");
            let lines: Vec<Expected> = lines.into_iter().map(|(d, free)| Expected {
                expected_at: d.map(|d| base + Duration::days(d)), free,
            }).collect();
            let (early, late) = (a.min(b), a.max(b));
            let x = atp(avail, &lines, base + Duration::days(early));
            let y = atp(avail, &lines, base + Duration::days(late));
            prop_assert!(x >= 0 && x <= y);
        }

        /// Relocation never places more than the other lines and stock offer.
        #[test]
        fn relocation_fits_what_is_there(
            allocs in prop::collection::vec(1i64..20, 0..6), avail in 0i64..30,
            free in prop::collection::vec(0i64..20, 0..4)
        ) {
            let out = relocate(&allocs, avail, &free);
            let mut stock = 0;
            let mut used = vec![0i64; free.len()];
            for (a, s) in allocs.iter().zip(&out) {
                if let Some(s) = s {
                    prop_assert_eq!(s.on_supply.iter().sum::<i64>() + s.from_stock, *a);
                    stock += s.from_stock;
                    for (u, n) in used.iter_mut().zip(&s.on_supply) { *u += n; }
                }
            }
            prop_assert!(stock <= avail);
            for (u, f) in used.iter().zip(&free) { prop_assert!(u <= f); }
        }
    }
}
