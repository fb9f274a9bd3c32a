//! Why each candidate was or was not chosen: the gates, and the explanation of the outcome.

use super::super::availability::Channel;
use super::super::location::LocationKind;
use super::cover::has_bit;
use super::{
    Assignment, Candidate, Considered, Decision, Fulfilment, OrderLine, ReasonCode, RouteRequest,
};

/// A candidate with its distance and, if it failed eligibility, distance or capacity, why.
pub(super) struct Row<'c> {
    /// Position in the caller's slice.
    pub(super) input: usize,
    pub(super) cand: &'c Candidate,
    pub(super) dist: f64,
    pub(super) gate: Option<ReasonCode>,
}

/// What happened to a row; turned into a [`Considered`] at the end.
#[derive(Debug, Clone, Copy)]
pub(super) enum Verdict {
    /// Usable, not yet decided (never left in the output).
    Pending,
    /// Failed eligibility, distance or capacity (the code says which).
    Skip(ReasonCode),
    NotRequested {
        alternative: bool,
    },
    /// Lacks line `line`; `nowhere`: no usable location has enough of it either.
    NoStock {
        line: usize,
        nowhere: bool,
    },
    NearestWithEverything,
    RequestedWithEverything,
    /// Ships assignment `k` of a split.
    Ships(usize),
    /// Lacks line `line`, which must be split, and all usable locations have only `total`.
    ShortInAll {
        line: usize,
        total: i64,
    },
    NearerHasEverything,
    CoveredOtherwise,
}

pub(super) fn gate(req: &RouteRequest<'_>, cand: &Candidate, dist: f64) -> Option<ReasonCode> {
    let eligible = match req.fulfilment {
        Fulfilment::Pickup => cand.kind == LocationKind::Store && cand.pickup,
        Fulfilment::Delivery => Channel::Online.includes(cand.kind, cand.ship_from),
    };
    if !eligible {
        return Some(match req.fulfilment {
            Fulfilment::Pickup => ReasonCode::PickupDisabled,
            Fulfilment::Delivery => ReasonCode::DoesNotShip,
        });
    }
    if !dist.is_finite() || req.max_distance_km.is_some_and(|max| dist > max) {
        return Some(ReasonCode::TooFar);
    }
    if cand.capacity_left.is_some_and(|left| left <= 0) {
        return Some(ReasonCode::CapacityFull);
    }
    None
}

/// Every line, whole.
pub(super) fn whole_lines(lines: &[OrderLine]) -> Vec<(usize, i64)> {
    lines.iter().map(|l| l.quantity).enumerate().collect()
}

pub(super) fn stock(cand: &Candidate, sku: &str) -> i64 {
    cand.available.get(sku).copied().unwrap_or(0)
}

/// The first line `cand` lacks, preferring one in `nowhere` (lines no usable location has).
pub(super) fn no_stock(cand: &Candidate, lines: &[OrderLine], nowhere: Option<&[u64]>) -> Verdict {
    let lacks = |l: &usize| stock(cand, &lines[*l].sku) < lines[*l].quantity;
    if let Some(line) = nowhere.and_then(|m| (0..lines.len()).find(|l| has_bit(m, *l) && lacks(l)))
    {
        return Verdict::NoStock {
            line,
            nowhere: true,
        };
    }
    Verdict::NoStock {
        line: (0..lines.len()).find(lacks).unwrap_or(0),
        nowhere: false,
    }
}

pub(super) fn explain(
    row: &Row<'_>,
    verdict: Verdict,
    max_km: Option<&str>,
    lines: &[OrderLine],
    assignments: &[Assignment],
) -> Considered {
    use ReasonCode as C;
    let (code, reason) = match verdict {
        Verdict::Skip(C::PickupDisabled) if row.cand.kind != LocationKind::Store => (
            C::PickupDisabled,
            "pickup disabled (not a store)".to_owned(),
        ),
        Verdict::Skip(C::TooFar) => (
            C::TooFar,
            match max_km {
                Some(max) if row.dist.is_finite() => {
                    // Tenths by integer arithmetic: cheaper than float formatting, and the
                    // same rounding as `distance_km`.
                    let tenths = (row.dist * 10.0).round() as i64;
                    format!("too far ({}.{} km > {max} km)", tenths / 10, tenths % 10)
                }
                _ => "distance unknown (invalid coordinates)".to_owned(),
            },
        ),
        Verdict::Skip(code) => (
            code,
            match code {
                C::CapacityFull => "capacity full today",
                C::PickupDisabled => "pickup disabled",
                C::DoesNotShip => "does not ship",
                _ => "skipped",
            }
            .to_owned(),
        ),
        Verdict::NotRequested { alternative } => (
            C::NotRequested,
            if alternative {
                "not the requested pickup location (could serve the order)"
            } else {
                "not the requested pickup location"
            }
            .to_owned(),
        ),
        Verdict::NoStock { line, nowhere } => {
            let (sku, needs) = lines
                .get(line)
                .map_or(("", 0), |l| (l.sku.as_str(), l.quantity));
            let has = stock(row.cand, sku);
            let suffix = if nowhere {
                "; no eligible location has enough of it"
            } else {
                ""
            };
            (
                C::NoStock,
                format!("no stock for line {sku} (needs {needs}, has {has}){suffix}"),
            )
        }
        Verdict::NearestWithEverything => {
            (C::Chosen, "nearest location with every line".to_owned())
        }
        Verdict::RequestedWithEverything => (
            C::Chosen,
            "requested pickup location with every line".to_owned(),
        ),
        Verdict::Ships(k) => {
            // Lines are merged, so a SKU names one line.
            let asked = |sku: &str| {
                lines
                    .iter()
                    .find(|l| l.sku == sku)
                    .map_or(0, |l| l.quantity)
            };
            let gives: Vec<String> = assignments
                .get(k)
                .map(|a| {
                    a.lines
                        .iter()
                        .map(|l| format!("{} of {} {}", l.quantity, asked(&l.sku), l.sku))
                        .collect()
                })
                .unwrap_or_default();
            (C::Chosen, format!("gives {}", gives.join(", ")))
        }
        Verdict::ShortInAll { line, total } => {
            let (sku, needs) = lines
                .get(line)
                .map_or(("", 0), |l| (l.sku.as_str(), l.quantity));
            let has = stock(row.cand, sku);
            (
                C::NoStock,
                format!(
                    "no stock for line {sku} (needs {needs}, has {has}); the eligible locations have {total} of it in all"
                ),
            )
        }
        Verdict::NearerHasEverything => (
            C::NotNeeded,
            "another location nearer with every line".to_owned(),
        ),
        Verdict::CoveredOtherwise => (
            C::NotNeeded,
            "covered by fewer or nearer shipments".to_owned(),
        ),
        // Unreachable by construction; kept total rather than panicking.
        Verdict::Pending => (C::NotNeeded, "not needed".to_owned()),
    };
    Considered {
        location_id: row.cand.location_id.clone(),
        decision: if code == C::Chosen {
            Decision::Chosen
        } else {
            Decision::Skipped
        },
        code,
        reason,
        distance_km: round_km(row.dist),
    }
}

pub(super) fn round_km(km: f64) -> f64 {
    (km * 10.0).round() / 10.0
}
