//! Holds: the rules for taking, keeping and giving back reserved stock.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::routing::OrderLine;

pub const DEFAULT_TTL_SECONDS: i64 = 15 * 60;
pub const MAX_TTL_SECONDS: i64 = 24 * 3600;
/// Most lines one reservation or order may carry.
pub const MAX_LINES: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Held,
    Confirmed,
    Fulfilled,
    Released,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Held => "held",
            Status::Confirmed => "confirmed",
            Status::Fulfilled => "fulfilled",
            Status::Released => "released",
            Status::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Status::Held,
            Status::Confirmed,
            Status::Fulfilled,
            Status::Released,
            Status::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether stock is still held (and so can be confirmed, released or consumed).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Held | Status::Confirmed)
    }
}

/// When a hold taken `now` expires; `None` ttl means the default.
pub fn expires_at(now: DateTime<Utc>, ttl_seconds: Option<i64>) -> Result<DateTime<Utc>, String> {
    let ttl = valid_ttl(ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS))?;
    Ok(now + Duration::seconds(ttl))
}

/// A hold's lifetime in seconds, within the bounds that both taking and extending a hold obey.
pub fn valid_ttl(ttl_seconds: i64) -> Result<i64, String> {
    if (1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        Ok(ttl_seconds)
    } else {
        Err(format!(
            "ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"
        ))
    }
}

/// A line that cannot be held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shortfall {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// All lines or none: every shortfall, or Ok when each (merged) line fits what is available.
pub fn check(lines: &[OrderLine], available: impl Fn(&str) -> i64) -> Result<(), Vec<Shortfall>> {
    let short: Vec<Shortfall> = lines
        .iter()
        .filter_map(|l| {
            let a = available(&l.sku);
            (l.quantity > a).then(|| Shortfall {
                sku: l.sku.clone(),
                requested: l.quantity,
                available: a,
            })
        })
        .collect();
    if short.is_empty() {
        Ok(())
    } else {
        Err(short)
    }
}

/// What a group of holds on the same levels decided for one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Held: every line fits what the earlier holds of the group left.
    Take,
    /// The id is taken already, or by an earlier hold of the group: answered with that one.
    Replay,
    Short(Vec<Shortfall>),
}

/// Decides a group of holds in arrival order, each against what is available after the earlier
/// ones it took (all lines or none, as `check`). `available(sku, taken)` is what is available
/// of `sku` when the group has already taken `taken` of it; `exists(id)` tells an id already
/// recorded. Equivalent to taking the holds one after another.
pub fn plan_group<'a>(
    holds: &[(&'a str, &'a [OrderLine])],
    exists: impl Fn(&str) -> bool,
    available: impl Fn(&str, i64) -> i64,
) -> Vec<Decision> {
    let mut taken: HashMap<&'a str, i64> = HashMap::new();
    let mut ids: HashSet<&'a str> = HashSet::new();
    holds
        .iter()
        .map(|&(id, lines)| {
            if exists(id) || ids.contains(id) {
                return Decision::Replay;
            }
            let so_far = |sku: &str| taken.get(sku).copied().unwrap_or(0);
            if let Err(short) = check(lines, |sku| available(sku, so_far(sku))) {
                return Decision::Short(short);
            }
            let mut next = taken.clone();
            for l in lines {
                let t = next.entry(l.sku.as_str()).or_insert(0);
                match t.checked_add(l.quantity) {
                    Some(n) => *t = n,
                    None => {
                        return Decision::Short(vec![Shortfall {
                            sku: l.sku.clone(),
                            requested: l.quantity,
                            available: available(&l.sku, so_far(&l.sku)),
                        }])
                    }
                }
            }
            taken = next;
            ids.insert(id);
            Decision::Take
        })
        .collect()
}

/// How much of a hold a sale (or transfer out) of `quantity` consumes.
pub fn consumed(held: i64, quantity: i64) -> i64 {
    held.min(quantity).max(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::routing::merge_lines;
    use proptest::prelude::*;

    fn line(sku: &str, quantity: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
        }
    }

    #[test]
    fn ttl_is_bounded_with_a_default() {
        let now = Utc::now();
        assert_eq!(expires_at(now, None), Ok(now + Duration::seconds(900)));
        assert_eq!(expires_at(now, Some(2)), Ok(now + Duration::seconds(2)));
        assert!(expires_at(now, Some(0)).is_err());
        assert!(expires_at(now, Some(MAX_TTL_SECONDS + 1)).is_err());
    }

    #[test]
    fn a_repeated_sku_is_checked_once_against_its_sum() {
        let lines = merge_lines(&[line("A", 2), line("B", 1), line("A", 2)]);
        let short = check(&lines, |sku| if sku == "A" { 3 } else { 5 }).expect_err("A needs 4");
        assert_eq!(
            short,
            vec![Shortfall {
                sku: "A".into(),
                requested: 4,
                available: 3
            }]
        );
        assert!(check(&lines, |_| 4).is_ok());
    }

    #[test]
    fn only_live_holds_count() {
        assert!(Status::Held.is_live() && Status::Confirmed.is_live());
        assert!(
            !Status::Expired.is_live()
                && !Status::Released.is_live()
                && !Status::Fulfilled.is_live()
        );
        assert_eq!(Status::parse("expired"), Some(Status::Expired));
    }

    fn ids_of(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("r{i}")).collect()
    }

    #[test]
    fn a_group_decides_in_arrival_order_and_replays_a_repeated_id() {
        let one = [line("A", 2)];
        let two = [line("A", 1), line("B", 1)];
        let holds: Vec<(&str, &[OrderLine])> = vec![
            ("x", &one),
            ("y", &two),
            ("x", &two),
            ("z", &one),
            ("old", &one),
        ];
        let d = plan_group(
            &holds,
            |id| id == "old",
            |sku, taken| (if sku == "A" { 4 } else { 1 }) - taken,
        );
        assert_eq!(d[0], Decision::Take);
        assert_eq!(d[1], Decision::Take);
        assert_eq!(d[2], Decision::Replay);
        assert_eq!(
            d[3],
            Decision::Short(vec![Shortfall {
                sku: "A".into(),
                requested: 2,
                available: 1
            }])
        );
        assert_eq!(d[4], Decision::Replay);
    }

    proptest! {
        #[test]
        fn a_group_never_takes_more_than_there_is(
            stock in 0i64..50,
            qs in proptest::collection::vec(1i64..10, 0..40),
        ) {
            let ids = ids_of(qs.len());
            let lines: Vec<Vec<OrderLine>> = qs.iter().map(|q| vec![line("A", *q)]).collect();
            let holds: Vec<(&str, &[OrderLine])> =
                ids.iter().zip(&lines).map(|(i, l)| (i.as_str(), l.as_slice())).collect();
            let d = plan_group(&holds, |_| false, |_, taken| stock - taken);
            let mut left = stock;
            for (q, d) in qs.iter().zip(&d) {
                // The same as one after another.
                if *q <= left {
                    prop_assert_eq!(d, &Decision::Take);
                    left -= q;
                } else {
                    let short = Decision::Short(vec![Shortfall {
                        sku: "A".into(), requested: *q, available: left,
                    }]);
                    prop_assert_eq!(d, &short);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn consumption_never_exceeds_the_hold_or_the_sale(held in 0i64..100, q in 1i64..100) {
            let c = consumed(held, q);
            prop_assert!(c <= held && c <= q && c >= 0);
            prop_assert!(c == held || c == q);
        }
    }
}
