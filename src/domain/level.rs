//! How movements change on-hand, including counts and late deltas.
//!
//! The rule (contract, "Effect on on-hand"): a delta adds its signed quantity; a count sets
//! on-hand *as of its `occurred_at`*: on-hand becomes the counted quantity plus every recorded
//! delta that occurred strictly after the count. A delta at or before the latest count is
//! recorded but changes nothing (the count already saw it). A count older than the latest count
//! is recorded but changes nothing either. Of two counts with the same `occurred_at`, the one
//! recorded later wins (a recount).
//!
//! Consequence used by the invariant check ([`ledger_implied`]): on-hand always equals the
//! latest count (by `occurred_at`, then arrival) plus the deltas that occurred after it, or
//! the sum of all deltas when there is no count.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::movement::MovementKind;

/// The part of a stock level that movements change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LevelFacts {
    pub on_hand: i64,
    /// `occurred_at` of the latest count applied, if any.
    pub last_count_at: Option<DateTime<Utc>>,
}

/// The facts of one movement that matter for on-hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovementFact {
    pub kind: MovementKind,
    pub quantity: i64,
    pub occurred_at: DateTime<Utc>,
}

/// A delta already in the ledger: when it occurred and its signed quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedDelta {
    pub occurred_at: DateTime<Utc>,
    pub delta: i64,
}

/// What applying a movement did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// On-hand was changed (or, for a count, set; possibly to the same value).
    Applied,
    /// A delta at or before the latest count: recorded only.
    Late,
    /// A count older than the latest count: recorded only.
    StaleCount,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Late => "late",
            Outcome::StaleCount => "stale_count",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    pub outcome: Outcome,
    /// How much on-hand changed (0 for late and stale movements).
    pub on_hand_change: i64,
    pub on_hand_after: i64,
}

/// A movement whose effect does not fit an i64 (the PostgreSQL bigint of the level and the
/// ledger): it must be rejected, not wrapped or saturated, or on-hand would stop being the sum
/// of its ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the movement would take on-hand past the range of a 64-bit integer")
    }
}

/// Sums quantities, or `None` when the sum leaves the i64 range. Summed in i128, so a sum that
/// fits is never refused for a partial sum that does not (2^64 terms would be needed to
/// overflow the i128).
pub fn checked_sum(quantities: impl IntoIterator<Item = i64>) -> Option<i64> {
    i64::try_from(quantities.into_iter().map(i128::from).sum::<i128>()).ok()
}

/// Applies one movement to `level`.
///
/// `recorded` must hold every delta already recorded for this (location, SKU) that occurred
/// after the count being applied (the caller may pass more; older ones are ignored). The
/// movement, if a delta, is appended to it so a later count in the same batch sees it.
///
/// On `Err(Overflow)` neither `level` nor `recorded` changed: the movement can be rejected
/// alone and the rest of its batch applied.
pub fn apply(
    level: &mut LevelFacts,
    recorded: &mut Vec<RecordedDelta>,
    m: MovementFact,
) -> Result<Effect, Overflow> {
    let before = level.on_hand;
    let (outcome, after, counted) = match m.kind.signed_delta_checked(m.quantity) {
        Some(delta) => {
            let delta = delta.ok_or(Overflow)?;
            match level.last_count_at {
                Some(counted) if m.occurred_at <= counted => (Outcome::Late, before, None),
                _ => (
                    Outcome::Applied,
                    before.checked_add(delta).ok_or(Overflow)?,
                    None,
                ),
            }
        }
        None => match level.last_count_at {
            Some(counted) if m.occurred_at < counted => (Outcome::StaleCount, before, None),
            _ => {
                let after = checked_sum(
                    recorded
                        .iter()
                        .filter(|d| d.occurred_at > m.occurred_at)
                        .map(|d| d.delta)
                        .chain([m.quantity]),
                )
                .ok_or(Overflow)?;
                (Outcome::Applied, after, Some(m.occurred_at))
            }
        },
    };
    let on_hand_change = after.checked_sub(before).ok_or(Overflow)?;
    // Every check passed: only now is anything changed.
    if let Some(Some(delta)) = m.kind.signed_delta_checked(m.quantity) {
        recorded.push(RecordedDelta {
            occurred_at: m.occurred_at,
            delta,
        });
    }
    level.on_hand = after;
    if counted.is_some() {
        level.last_count_at = counted;
    }
    Ok(Effect {
        outcome,
        on_hand_change,
        on_hand_after: after,
    })
}

/// The on-hand a ledger implies, given its movements in the order they were recorded; `None`
/// when it does not fit an i64.
pub fn ledger_implied(ledger: &[MovementFact]) -> Option<i64> {
    let latest_count = ledger
        .iter()
        .enumerate()
        .filter(|(_, m)| m.kind == MovementKind::Count)
        .max_by_key(|(i, m)| (m.occurred_at, *i))
        .map(|(_, m)| m);
    let mut deltas = Vec::with_capacity(ledger.len());
    for m in ledger {
        if let Some(d) = m.kind.signed_delta_checked(m.quantity) {
            deltas.push((m.occurred_at, d?));
        }
    }
    match latest_count {
        Some(c) => checked_sum(
            deltas
                .into_iter()
                .filter(|(t, _)| *t > c.occurred_at)
                .map(|(_, d)| d)
                .chain([c.quantity]),
        ),
        None => checked_sum(deltas.into_iter().map(|(_, d)| d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use MovementKind::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, minute, 0)
            .single()
            .expect("time")
    }

    fn mv(kind: MovementKind, quantity: i64, minute: u32) -> MovementFact {
        MovementFact {
            kind,
            quantity,
            occurred_at: at(minute),
        }
    }

    fn run(ledger: &[MovementFact]) -> (LevelFacts, Vec<Effect>) {
        let mut level = LevelFacts::default();
        let mut recorded = Vec::new();
        let effects = ledger
            .iter()
            .map(|m| apply(&mut level, &mut recorded, *m).expect("in range"))
            .collect();
        (level, effects)
    }

    #[test]
    fn deltas_add_and_subtract() {
        let (level, _) = run(&[
            mv(Receipt, 10, 0),
            mv(Sale, 3, 1),
            mv(Damage, 1, 2),
            mv(Return, 2, 3),
        ]);
        assert_eq!(level.on_hand, 8);
    }

    #[test]
    fn movements_may_take_on_hand_below_zero() {
        let (level, effects) = run(&[mv(Sale, 3, 0)]);
        assert_eq!(level.on_hand, -3);
        assert_eq!(effects[0].outcome, Outcome::Applied);
    }

    #[test]
    fn count_then_late_delta_is_recorded_but_not_applied() {
        let (level, effects) = run(&[mv(Count, 7, 10), mv(Sale, 2, 9), mv(Sale, 1, 10)]);
        assert_eq!(level.on_hand, 7);
        assert_eq!(effects[1].outcome, Outcome::Late);
        assert_eq!(effects[1].on_hand_change, 0);
        assert_eq!(
            effects[2].outcome,
            Outcome::Late,
            "at the count's instant counts as seen"
        );
    }

    #[test]
    fn count_adds_deltas_recorded_after_it() {
        // A sale at 10:12 reached us before the 10:10 count did.
        let (level, effects) = run(&[mv(Receipt, 5, 0), mv(Sale, 2, 12), mv(Count, 9, 10)]);
        assert_eq!(level.on_hand, 7);
        assert_eq!(effects[2].on_hand_change, 7 - 3);
        assert_eq!(level.last_count_at, Some(at(10)));
    }

    #[test]
    fn stale_count_changes_nothing_and_recount_wins() {
        let (level, effects) = run(&[mv(Count, 9, 10), mv(Count, 4, 5), mv(Count, 6, 10)]);
        assert_eq!(effects[1].outcome, Outcome::StaleCount);
        assert_eq!(level.on_hand, 6);
        assert_eq!(
            ledger_implied(&[mv(Count, 9, 10), mv(Count, 4, 5), mv(Count, 6, 10)]),
            Some(6)
        );
    }

    #[test]
    fn overflow_is_refused_and_changes_nothing() {
        let mut level = LevelFacts {
            on_hand: i64::MAX - 1,
            last_count_at: None,
        };
        let mut recorded = Vec::new();
        assert_eq!(
            apply(&mut level, &mut recorded, mv(Receipt, 2, 0)),
            Err(Overflow)
        );
        assert_eq!(
            apply(&mut level, &mut recorded, mv(Sale, i64::MIN, 0)),
            Err(Overflow),
            "-i64::MIN does not exist"
        );
        assert_eq!(level.on_hand, i64::MAX - 1);
        assert!(recorded.is_empty(), "a refused delta is not recorded");
        let e = apply(&mut level, &mut recorded, mv(Receipt, 1, 0)).expect("fits");
        assert_eq!(e.on_hand_after, i64::MAX);
        // A count plus the deltas recorded after it.
        let mut recorded = vec![RecordedDelta {
            occurred_at: at(5),
            delta: i64::MAX,
        }];
        let mut level = LevelFacts::default();
        assert_eq!(
            apply(&mut level, &mut recorded, mv(Count, 1, 1)),
            Err(Overflow)
        );
        assert_eq!(level, LevelFacts::default());
        // A change from very negative to very positive does not fit the ledger's `effect`.
        let mut level = LevelFacts {
            on_hand: i64::MIN,
            last_count_at: None,
        };
        assert_eq!(
            apply(&mut level, &mut Vec::new(), mv(Count, 1, 1)),
            Err(Overflow)
        );
        assert_eq!(
            ledger_implied(&[mv(Receipt, i64::MAX, 0), mv(Return, 1, 1)]),
            None
        );
    }

    /// The on-hand a ledger implies, in exact arithmetic (the reference for the i64 code).
    fn implied_exact(ledger: &[MovementFact]) -> i128 {
        let latest = ledger
            .iter()
            .enumerate()
            .filter(|(_, m)| m.kind == Count)
            .max_by_key(|(i, m)| (m.occurred_at, *i))
            .map(|(_, m)| m);
        let delta = |m: &MovementFact| match m.kind {
            Receipt | Return | TransferIn | Adjustment => i128::from(m.quantity),
            Sale | TransferOut | Damage => -i128::from(m.quantity),
            Count => 0,
        };
        let deltas = ledger.iter().filter(|m| m.kind != Count);
        match latest {
            Some(c) => {
                i128::from(c.quantity)
                    + deltas
                        .filter(|m| m.occurred_at > c.occurred_at)
                        .map(delta)
                        .sum::<i128>()
            }
            None => deltas.map(delta).sum(),
        }
    }

    /// Quantities from the whole i64 range, with its edges drawn often.
    fn any_quantity() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            prop::sample::select(vec![
                i64::MIN,
                i64::MIN + 1,
                -1,
                0,
                1,
                i64::MAX - 1,
                i64::MAX
            ]),
            -5i64..5,
        ]
    }

    fn arb_extreme_movement() -> impl Strategy<Value = MovementFact> {
        let kind = prop::sample::select(MovementKind::ALL.to_vec());
        (kind, any_quantity(), 0u32..20).prop_map(|(kind, q, minute)| mv(kind, q, minute))
    }

    fn arb_movement() -> impl Strategy<Value = MovementFact> {
        let kind = prop::sample::select(MovementKind::ALL.to_vec());
        (kind, 1i64..50, 0u32..20, any::<bool>()).prop_map(|(kind, q, minute, neg)| {
            let quantity = match kind {
                Adjustment if neg => -q,
                Count => q - 1,
                _ => q,
            };
            mv(kind, quantity, minute)
        })
    }

    proptest! {
        /// Over the whole i64 range, levels and counts plus deltas: no panic, and each
        /// movement either applies with exactly the change exact arithmetic gives, or is
        /// refused without changing anything. What was applied always equals its ledger.
        #[test]
        fn any_i64_is_applied_exactly_or_refused(
            start in any_quantity(),
            ledger in prop::collection::vec(arb_extreme_movement(), 0..40),
        ) {
            let mut level = LevelFacts { on_hand: start, last_count_at: None };
            let mut recorded = Vec::new();
            // The starting on-hand stands for a ledger of one receipt (at the earliest instant).
            let mut accepted = vec![mv(Receipt, start, 0)];
            accepted[0].occurred_at -= chrono::Duration::minutes(1);
            for m in ledger {
                let (before, seen) = (level, recorded.clone());
                match apply(&mut level, &mut recorded, m) {
                    Ok(e) => {
                        prop_assert_eq!(
                            i128::from(e.on_hand_after),
                            i128::from(before.on_hand) + i128::from(e.on_hand_change)
                        );
                        accepted.push(m);
                        prop_assert_eq!(i128::from(level.on_hand), implied_exact(&accepted));
                    }
                    Err(Overflow) => {
                        prop_assert_eq!(level, before);
                        prop_assert_eq!(&recorded, &seen);
                        let exact = {
                            let mut with = accepted.clone();
                            with.push(m);
                            implied_exact(&with)
                        };
                        let change = exact - i128::from(before.on_hand);
                        let delta_fits = m.kind.signed_delta_checked(m.quantity) != Some(None);
                        prop_assert!(
                            !delta_fits || i64::try_from(exact).is_err() || i64::try_from(change).is_err(),
                            "refused a movement that fits: {:?} on {}", m, before.on_hand
                        );
                    }
                }
            }
        }

        /// Applying movements one by one always leaves on-hand where the ledger says it is.
        #[test]
        fn on_hand_equals_ledger_implied(ledger in prop::collection::vec(arb_movement(), 0..60)) {
            let (level, _) = run(&ledger);
            prop_assert_eq!(Some(level.on_hand), ledger_implied(&ledger));
        }

        /// Effects add up: on-hand is the sum of every movement's change.
        #[test]
        fn effects_sum_to_on_hand(ledger in prop::collection::vec(arb_movement(), 0..60)) {
            let (level, effects) = run(&ledger);
            prop_assert_eq!(level.on_hand, effects.iter().map(|e| e.on_hand_change).sum::<i64>());
        }

        /// When no two counts share an instant, arrival order does not matter: late events
        /// land where they belong.
        #[test]
        fn arrival_order_does_not_matter(
            ledger in prop::collection::vec(arb_movement(), 0..40),
            seed in any::<u64>(),
        ) {
            let mut seen = std::collections::HashSet::new();
            let ledger: Vec<_> = ledger
                .into_iter()
                .filter(|m| m.kind != Count || seen.insert(m.occurred_at))
                .collect();
            let mut shuffled = ledger.clone();
            // Deterministic Fisher-Yates from the seed, so failures shrink and replay.
            let mut s = seed;
            for i in (1..shuffled.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (s >> 33) as usize % (i + 1);
                shuffled.swap(i, j);
            }
            prop_assert_eq!(run(&ledger).0.on_hand, run(&shuffled).0.on_hand);
        }
    }
}
