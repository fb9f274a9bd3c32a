//! Order routing: which location(s) fulfil an order, and why every other one did not. The
//! domain layer of `POST /v1/orders/route`; pure (no IO, no clock), deterministic.
//!
//! The rules, in the order they are applied to each candidate:
//!
//! 1. Eligibility. Pickup: a store with `pickup` enabled, else [`ReasonCode::PickupDisabled`];
//!    with a requested `pickup_location_id` every other location is
//!    [`ReasonCode::NotRequested`]. Delivery: a location that ships (the availability channel
//!    `online`: `ship_from`, or kind warehouse / online), else [`ReasonCode::DoesNotShip`].
//! 2. Distance: beyond `max_distance_km` is [`ReasonCode::TooFar`].
//! 3. Capacity: `capacity_left <= 0` is [`ReasonCode::CapacityFull`].
//! 4. Stock: a location *has every line* when its available-to-promise covers each line.
//!
//! One location with every line is always preferred: the nearest (ties: location id). Only a
//! delivery with `allow_split` and no such location is split, the fewest shipments first, then
//! the least total distance:
//!
//! - When every line is held whole by some usable location, each line is shipped whole from one
//!   location. The optimum is found exactly for up to 3 shipments; beyond that a greedy set
//!   cover is used (see [`route`]).
//! - When some line is held whole nowhere, that line is split in quantity across locations (the
//!   others still ship whole): each assignment carries the quantity held there, taken from the
//!   chosen locations nearest first. Exact for up to 3 shipments (with at most 100 locations
//!   left after pruning), greedy with local improvement beyond, never worse than the greedy:
//!   see [`quantity`] for the search and its bounds.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::availability::Channel;
use super::geo::haversine_km;
use super::location::LocationKind;

mod quantity;
#[cfg(test)]
mod quantity_tests;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fulfilment {
    Pickup,
    Delivery,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
}

/// Sums lines repeating a SKU (so one SKU is never checked twice against the same stock); keeps
/// first-seen order. Quantities are > 0 (validated by the caller).
pub fn merge_lines(lines: &[OrderLine]) -> Vec<OrderLine> {
    let mut merged: Vec<OrderLine> = Vec::with_capacity(lines.len());
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(lines.len());
    for line in lines {
        match index.get(line.sku.as_str()) {
            Some(&i) => merged[i].quantity = merged[i].quantity.saturating_add(line.quantity),
            None => {
                index.insert(&line.sku, merged.len());
                merged.push(line.clone());
            }
        }
    }
    merged
}

#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// Already merged ([`merge_lines`]) and non-empty (validated by the caller).
    pub lines: &'a [OrderLine],
    pub fulfilment: Fulfilment,
    pub customer_lat: f64,
    pub customer_lon: f64,
    /// Only meaningful for [`Fulfilment::Pickup`]; ignored for delivery.
    pub pickup_location_id: Option<&'a str>,
    pub max_distance_km: Option<f64>,
    /// Only meaningful for [`Fulfilment::Delivery`]; a pickup never splits.
    pub allow_split: bool,
}

#[derive(Debug, Clone)]
pub struct Candidate {
    pub location_id: String,
    pub kind: LocationKind,
    pub lat: f64,
    pub lon: f64,
    pub pickup: bool,
    pub ship_from: bool,
    /// Available-to-promise per SKU of the order; a missing SKU means 0.
    pub available: HashMap<String, i64>,
    /// Orders it may still take today; None = unlimited.
    pub capacity_left: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assignment {
    pub location_id: String,
    /// Rounded to 0.1 km.
    pub distance_km: f64,
    pub lines: Vec<OrderLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Chosen,
    Skipped,
}

/// Machine-readable reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    Chosen,
    NoStock,
    CapacityFull,
    TooFar,
    PickupDisabled,
    DoesNotShip,
    NotRequested,
    NotNeeded,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Considered {
    pub location_id: String,
    pub decision: Decision,
    pub code: ReasonCode,
    /// Human sentence, e.g. "no stock for line TEE-RED-M (needs 2, has 1)", "capacity full today",
    /// "too far (123.4 km > 50 km)", "pickup disabled", "does not ship", "nearest location with every line",
    /// "another location nearer with every line", "covered by fewer or nearer shipments".
    pub reason: String,
    /// Rounded to 0.1 km.
    pub distance_km: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteOutcome {
    /// Empty when the order cannot be fulfilled.
    pub assignments: Vec<Assignment>,
    /// One entry per candidate passed in, nearest first (ties: location_id).
    pub explanation: Vec<Considered>,
    /// For a pickup at a given location that cannot serve it: up to 5 nearest pickup-enabled
    /// stores that have every line and capacity (location_id, distance_km). Else empty.
    pub alternatives: Vec<(String, f64)>,
}

/// How many alternatives a failed pickup at a given location offers.
const MAX_ALTERNATIVES: usize = 5;
/// Largest order (in lines) for which the split search uses a "nearest location covering at
/// least these lines" table of 2^lines entries instead of scanning.
const TABLE_MAX_LINES: usize = 12;
/// Safety valve for the exact split search of orders over [`TABLE_MAX_LINES`] lines (the scan
/// path): after this many class probes the best cover found so far (never worse than greedy)
/// is kept. The table path is always exact: at most C^2 O(1) lookups, C < 2^12.
const PROBE_BUDGET: u64 = 1 << 20;

/// Decides which location(s) fulfil the order; see the module docs for the rules.
///
/// Split search (delivery, `allow_split`, no single location has every line). Each usable
/// candidate gets a bitmask of the lines it can serve whole. Only the nearest candidate of each
/// distinct mask matters, and a candidate whose mask is a subset of a nearer one's is dominated
/// (swapping it for the nearer one never adds a shipment nor distance), so the search runs over
/// at most `min(candidates, 2^lines - 1)` non-dominated *classes*, in distance order. A greedy
/// set cover (most uncovered lines, then nearest) gives an upper bound; then covers of 2 and 3
/// are searched exactly: every cover contains a class serving the line served by the fewest
/// classes, so the first member is enumerated over those only, the second over the classes
/// serving the rarest line still uncovered, and the third is the nearest class covering all that
/// remains (a table lookup for up to 12 lines, else a scan of the rarest remaining line's
/// classes). Enumeration is in distance order and stops once a lower bound exceeds the best
/// total. Cost: O(candidates x lines) for the masks, O(candidates x C) for the classes, then
/// at most O(C^2) lookups for C classes (C <= 31 for 5 lines): table lookups up to 12 lines
/// (building the table is O(lines x 2^lines)); beyond, each lookup scans up to C classes, capped
/// by a probe budget. Beyond 3 shipments the greedy cover (O(shipments x C)) is used.
///
/// Pickup at a requested location: `max_distance_km` and capacity apply to it as to any other;
/// the alternatives offered are what a pickup without a requested location could choose
/// (pickup-enabled stores within `max_distance_km`, with capacity and every line), and they are
/// marked "could serve the order" in the explanation. `pickup_location_id` is ignored for a
/// delivery. Empty `lines` are not expected (the caller validates); they would be served by the
/// nearest usable location with no lines.
pub fn route(req: &RouteRequest<'_>, candidates: &[Candidate]) -> RouteOutcome {
    let lines = req.lines;
    let n = lines.len();
    let words = n.div_ceil(64).max(1);
    let full = full_mask(n, words);

    let mut rows: Vec<Row<'_>> = candidates
        .iter()
        .enumerate()
        .map(|(input, cand)| {
            let dist = haversine_km(req.customer_lat, req.customer_lon, cand.lat, cand.lon);
            Row {
                input,
                cand,
                dist,
                gate: gate(req, cand, dist),
            }
        })
        .collect();
    // Ties on id (duplicate ids are a caller bug) keep their input order.
    rows.sort_unstable_by(|a, b| {
        a.dist
            .total_cmp(&b.dist)
            .then_with(|| a.cand.location_id.cmp(&b.cand.location_id))
            .then(a.input.cmp(&b.input))
    });

    // Which lines each usable row can serve whole.
    let mut masks = vec![0u64; rows.len() * words];
    for (i, row) in rows.iter().enumerate() {
        if row.gate.is_none() {
            let mask = &mut masks[i * words..(i + 1) * words];
            for (l, line) in lines.iter().enumerate() {
                if stock(row.cand, &line.sku) >= line.quantity {
                    mask[l / 64] |= 1 << (l % 64);
                }
            }
        }
    }
    let mask_of = |i: usize| &masks[i * words..(i + 1) * words];
    let usable = |i: usize| rows[i].gate.is_none();
    let has_every_line = |i: usize| usable(i) && mask_of(i) == full.as_slice();

    let mut verdicts: Vec<Verdict> = rows
        .iter()
        .map(|r| r.gate.map_or(Verdict::Pending, Verdict::Skip))
        .collect();
    // Chosen rows (indices into `rows`) with the (line, quantity) each ships, nearest first.
    let mut chosen: Vec<(usize, Vec<(usize, i64)>)> = Vec::new();
    let mut alternatives = Vec::new();

    match (req.fulfilment, req.pickup_location_id) {
        (Fulfilment::Pickup, Some(requested)) => {
            let target = rows.iter().position(|r| r.cand.location_id == requested);
            match target {
                Some(t) if has_every_line(t) => {
                    verdicts[t] = Verdict::RequestedWithEverything;
                    chosen.push((t, whole_lines(lines)));
                }
                _ => {
                    if let Some(t) = target.filter(|&t| usable(t)) {
                        verdicts[t] = no_stock(rows[t].cand, lines, None);
                    }
                    alternatives = (0..rows.len())
                        .filter(|&i| Some(i) != target && has_every_line(i))
                        .take(MAX_ALTERNATIVES)
                        .collect();
                }
            }
            for (i, v) in verdicts.iter_mut().enumerate() {
                if Some(i) != target {
                    *v = Verdict::NotRequested {
                        alternative: alternatives.contains(&i),
                    };
                }
            }
        }
        (fulfilment, _) => {
            if let Some(s) = (0..rows.len()).find(|&i| has_every_line(i)) {
                for i in (0..rows.len()).filter(|&i| usable(i)) {
                    verdicts[i] = if i == s {
                        Verdict::NearestWithEverything
                    } else if has_every_line(i) {
                        Verdict::NearerHasEverything
                    } else {
                        no_stock(rows[i].cand, lines, None)
                    };
                }
                chosen.push((s, whole_lines(lines)));
            } else if fulfilment == Fulfilment::Delivery && req.allow_split {
                let usable_rows: Vec<usize> = (0..rows.len()).filter(|&i| usable(i)).collect();
                let dists: Vec<f64> = rows.iter().map(|r| r.dist).collect();
                let problem = quantity::Problem::new(
                    lines.iter().map(|l| l.quantity).collect(),
                    usable_rows.iter().map(|&i| dists[i]).collect(),
                    &usable_rows
                        .iter()
                        .flat_map(|&i| {
                            let cand = rows[i].cand;
                            lines.iter().map(move |l| stock(cand, &l.sku))
                        })
                        .collect::<Vec<i64>>(),
                );
                if problem.splits() {
                    match quantity::search(&problem) {
                        Some(members) => {
                            for (m, given) in quantity::allocate(&problem, &members) {
                                chosen.push((usable_rows[m], given));
                            }
                            for (k, &i) in usable_rows.iter().enumerate() {
                                verdicts[i] =
                                    if let Some(s) = chosen.iter().position(|(r, _)| *r == i) {
                                        Verdict::Ships(s)
                                    } else if problem.gives_any(k) {
                                        Verdict::CoveredOtherwise
                                    } else {
                                        no_stock(rows[i].cand, lines, None)
                                    };
                            }
                        }
                        None => {
                            let short = quantity::short_lines(&problem);
                            let total = |l: usize| {
                                usable_rows.iter().fold(0i64, |t, &i| {
                                    t.saturating_add(stock(rows[i].cand, &lines[l].sku).max(0))
                                })
                            };
                            for &i in &usable_rows {
                                verdicts[i] = match short.iter().find(|&&l| {
                                    stock(rows[i].cand, &lines[l].sku) < lines[l].quantity
                                }) {
                                    Some(&line) => Verdict::ShortInAll {
                                        line,
                                        total: total(line),
                                    },
                                    None => no_stock(rows[i].cand, lines, None),
                                };
                            }
                        }
                    }
                } else {
                    match split(&dists, &masks, &usable_rows, n, words) {
                        Ok(members) => {
                            for (l, line) in lines.iter().enumerate() {
                                // Nearest chosen location serving the line (members are nearest first).
                                if let Some(&m) = members.iter().find(|&&m| has_bit(mask_of(m), l))
                                {
                                    let given = (l, line.quantity);
                                    match chosen.iter_mut().find(|(row, _)| *row == m) {
                                        Some((_, ls)) => ls.push(given),
                                        None => chosen.push((m, vec![given])),
                                    }
                                }
                            }
                            chosen.sort_by_key(|(row, _)| *row);
                            for &i in &usable_rows {
                                verdicts[i] =
                                    if let Some(k) = chosen.iter().position(|(r, _)| *r == i) {
                                        Verdict::Ships(k)
                                    } else if mask_of(i).iter().any(|&w| w != 0) {
                                        Verdict::CoveredOtherwise
                                    } else {
                                        no_stock(rows[i].cand, lines, None)
                                    };
                            }
                        }
                        Err(uncovered) => {
                            for &i in &usable_rows {
                                verdicts[i] = no_stock(rows[i].cand, lines, Some(&uncovered));
                            }
                        }
                    }
                }
            } else {
                for i in (0..rows.len()).filter(|&i| usable(i)) {
                    verdicts[i] = no_stock(rows[i].cand, lines, None);
                }
            }
        }
    }

    let assignments: Vec<Assignment> = chosen
        .iter()
        .map(|(i, ls)| Assignment {
            location_id: rows[*i].cand.location_id.clone(),
            distance_km: round_km(rows[*i].dist),
            lines: ls
                .iter()
                .map(|&(l, quantity)| OrderLine {
                    sku: lines[l].sku.clone(),
                    quantity,
                })
                .collect(),
        })
        .collect();
    let max_km = req.max_distance_km.map(|max| max.to_string());
    let explanation = rows
        .iter()
        .zip(&verdicts)
        .map(|(row, verdict)| explain(row, *verdict, max_km.as_deref(), lines, &assignments))
        .collect();
    let alternatives = alternatives
        .into_iter()
        .map(|i| (rows[i].cand.location_id.clone(), round_km(rows[i].dist)))
        .collect();
    RouteOutcome {
        assignments,
        explanation,
        alternatives,
    }
}

/// A candidate with its distance and, if it failed eligibility, distance or capacity, why.
struct Row<'c> {
    /// Position in the caller's slice.
    input: usize,
    cand: &'c Candidate,
    dist: f64,
    gate: Option<ReasonCode>,
}

/// What happened to a row; turned into a [`Considered`] at the end.
#[derive(Debug, Clone, Copy)]
enum Verdict {
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

fn gate(req: &RouteRequest<'_>, cand: &Candidate, dist: f64) -> Option<ReasonCode> {
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
fn whole_lines(lines: &[OrderLine]) -> Vec<(usize, i64)> {
    lines.iter().map(|l| l.quantity).enumerate().collect()
}

fn stock(cand: &Candidate, sku: &str) -> i64 {
    cand.available.get(sku).copied().unwrap_or(0)
}

/// The first line `cand` lacks, preferring one in `nowhere` (lines no usable location has).
fn no_stock(cand: &Candidate, lines: &[OrderLine], nowhere: Option<&[u64]>) -> Verdict {
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

fn explain(
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

fn round_km(km: f64) -> f64 {
    (km * 10.0).round() / 10.0
}

// ---- Line bitmasks: `words` u64 per mask, bit l = line l. ----

fn full_mask(n: usize, words: usize) -> Vec<u64> {
    let mut m = vec![0u64; words];
    for l in 0..n {
        m[l / 64] |= 1 << (l % 64);
    }
    m
}

fn has_bit(mask: &[u64], l: usize) -> bool {
    mask.get(l / 64).is_some_and(|w| (w >> (l % 64)) & 1 == 1)
}

fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter().zip(b).all(|(x, y)| x & !y == 0)
}

fn is_empty(a: &[u64]) -> bool {
    a.iter().all(|&w| w == 0)
}

/// `out = a & !b`.
fn and_not(a: &[u64], b: &[u64], out: &mut [u64]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x & !y;
    }
}

fn bits(mask: &[u64]) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().flat_map(|(w, &word)| {
        let mut x = word;
        std::iter::from_fn(move || {
            (x != 0).then(|| {
                let b = x.trailing_zeros() as usize;
                x &= x - 1;
                w * 64 + b
            })
        })
    })
}

// ---- Split search ----

/// Non-dominated coverage classes, nearest first, and what the search needs to know about them.
struct Classes {
    words: usize,
    /// Row (index into the distance-sorted rows) representing each class.
    rows: Vec<usize>,
    dist: Vec<f64>,
    masks: Vec<u64>,
    /// Per line, the classes serving it, nearest first.
    serving: Vec<Vec<u32>>,
    /// For up to [`TABLE_MAX_LINES`] lines: per set of lines, the nearest class covering it.
    table: Option<Vec<u32>>,
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Cover {
    /// Class indices, ascending (= nearest first).
    members: Vec<u32>,
    total: f64,
}

impl Cover {
    fn new(mut members: Vec<u32>, dist: &[f64]) -> Self {
        members.sort_unstable();
        members.dedup();
        let total = members.iter().map(|&c| dist[c as usize]).sum();
        Cover { members, total }
    }

    /// Fewer shipments, then less total distance, then nearer members (for determinism).
    fn rank_cmp(&self, other: &Cover) -> Ordering {
        self.members
            .len()
            .cmp(&other.members.len())
            .then_with(|| self.total.total_cmp(&other.total))
            .then_with(|| self.members.cmp(&other.members))
    }
}

impl Classes {
    fn mask(&self, c: u32) -> &[u64] {
        let c = c as usize;
        &self.masks[c * self.words..(c + 1) * self.words]
    }

    /// The line of `need` served by the fewest classes.
    fn rarest(&self, need: &[u64]) -> Option<usize> {
        bits(need).min_by_key(|&l| (self.serving[l].len(), l))
    }

    /// The nearest class whose lines include all of `need` (non-empty).
    fn nearest_superset(&self, need: &[u64], probes: &mut u64) -> Option<u32> {
        if let Some(table) = &self.table {
            let c = table[need[0] as usize];
            return (c != NONE).then_some(c);
        }
        let line = self.rarest(need)?;
        self.serving[line].iter().copied().find(|&c| {
            *probes += 1;
            is_subset(need, self.mask(c))
        })
    }

    /// Most uncovered lines first, then nearest; None if some line cannot be covered.
    fn greedy(&self, full: &[u64]) -> Option<Cover> {
        let mut uncovered = full.to_vec();
        let mut members = Vec::new();
        while !is_empty(&uncovered) {
            let (best, gain) = (0..self.rows.len() as u32)
                .map(|c| {
                    let gain: u32 = self
                        .mask(c)
                        .iter()
                        .zip(&uncovered)
                        .map(|(m, u)| (m & u).count_ones())
                        .sum();
                    (c, gain)
                })
                // max_by_key keeps the last maximum; reverse so the nearest wins ties.
                .rev()
                .max_by_key(|&(_, gain)| gain)?;
            if gain == 0 {
                return None;
            }
            members.push(best);
            for (u, m) in uncovered.iter_mut().zip(self.mask(best)) {
                *u &= !m;
            }
        }
        Some(Cover::new(members, &self.dist))
    }
}

/// Chooses the rows of a split delivery: Ok(rows nearest first), or Err(mask of the lines no
/// usable row can serve whole).
fn split(
    dists: &[f64],
    masks: &[u64],
    usable_rows: &[usize],
    n: usize,
    words: usize,
) -> Result<Vec<usize>, Vec<u64>> {
    let full = full_mask(n, words);
    let row_mask = |i: usize| &masks[i * words..(i + 1) * words];

    // Classes: rows are nearest first, so a row whose lines are a subset of an earlier kept
    // row's (including the same lines) is dominated.
    let mut classes = Classes {
        words,
        rows: Vec::new(),
        dist: Vec::new(),
        masks: Vec::new(),
        serving: vec![Vec::new(); n],
        table: None,
    };
    let mut union = vec![0u64; words];
    for &i in usable_rows {
        let m = row_mask(i);
        if is_empty(m) || classes.masks.chunks_exact(words).any(|k| is_subset(m, k)) {
            continue;
        }
        let c = classes.rows.len() as u32;
        classes.rows.push(i);
        classes.dist.push(dists[i]);
        classes.masks.extend_from_slice(m);
        for l in bits(m) {
            classes.serving[l].push(c);
        }
        for (u, w) in union.iter_mut().zip(m) {
            *u |= w;
        }
    }
    if !is_subset(&full, &union) {
        let mut uncovered = vec![0u64; words];
        and_not(&full, &union, &mut uncovered);
        return Err(uncovered);
    }
    if n <= TABLE_MAX_LINES {
        let size = 1usize << n;
        let mut table = vec![NONE; size];
        for c in 0..classes.rows.len() as u32 {
            let slot = &mut table[classes.mask(c)[0] as usize];
            *slot = (*slot).min(c);
        }
        // Superset-min over the subset lattice: table[m] = min over masks containing m.
        for bit in 0..n {
            for m in 0..size {
                if m & (1 << bit) == 0 {
                    table[m] = table[m].min(table[m | (1 << bit)]);
                }
            }
        }
        classes.table = Some(table);
    }

    let Some(mut best) = classes.greedy(&full) else {
        // Unreachable: the union covers every line, so greedy always progresses.
        return Err(full);
    };
    let nearest = classes.dist.first().copied().unwrap_or(0.0);
    let mut probes = 0u64;
    let consider = |best: &mut Cover, members: Vec<u32>| {
        let cover = Cover::new(members, &classes.dist);
        if cover.rank_cmp(best) == Ordering::Less {
            *best = cover;
        }
    };
    let Some(first) = classes.rarest(&full) else {
        return Ok(Vec::new());
    };
    let mut need1 = vec![0u64; words];
    let mut need2 = vec![0u64; words];

    // Covers of 2: a serves the rarest line, the partner is the nearest class with the rest.
    for &a in &classes.serving[first] {
        let da = classes.dist[a as usize];
        if best.members.len() == 2 && da + nearest > best.total {
            break;
        }
        and_not(&full, classes.mask(a), &mut need1);
        if let Some(c) = classes.nearest_superset(&need1, &mut probes) {
            consider(&mut best, vec![a, c]);
        }
    }

    // Covers of 3, only if there is none of 2.
    if best.members.len() > 2 {
        'outer: for &a in &classes.serving[first] {
            let da = classes.dist[a as usize];
            if best.members.len() == 3 && da + 2.0 * nearest > best.total {
                break;
            }
            and_not(&full, classes.mask(a), &mut need1);
            let Some(second) = classes.rarest(&need1) else {
                continue;
            };
            for &b in &classes.serving[second] {
                let db = classes.dist[b as usize];
                if best.members.len() == 3 && da + db + nearest > best.total {
                    break;
                }
                and_not(&need1, classes.mask(b), &mut need2);
                if is_empty(&need2) {
                    continue;
                }
                if probes > PROBE_BUDGET {
                    break 'outer;
                }
                if let Some(c) = classes.nearest_superset(&need2, &mut probes) {
                    consider(&mut best, vec![a, b, c]);
                }
            }
        }
    }

    Ok(best
        .members
        .iter()
        .map(|&c| classes.rows[c as usize])
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TAIPEI: (f64, f64) = (25.05306, 121.52639);
    const KAOHSIUNG: (f64, f64) = (22.61626, 120.31333);
    const TAICHUNG: (f64, f64) = (24.13689, 120.68500);

    fn line(sku: &str, quantity: i64) -> OrderLine {
        OrderLine {
            sku: sku.into(),
            quantity,
        }
    }

    fn store(id: &str, at: (f64, f64), stock: &[(&str, i64)]) -> Candidate {
        Candidate {
            location_id: id.into(),
            kind: LocationKind::Store,
            lat: at.0,
            lon: at.1,
            pickup: true,
            ship_from: true,
            available: stock.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
            capacity_left: None,
        }
    }

    /// A point `km` north of Taipei.
    fn north(km: f64) -> (f64, f64) {
        (
            TAIPEI.0 + km / (crate::domain::geo::EARTH_RADIUS_KM.to_radians()),
            TAIPEI.1,
        )
    }

    fn req(lines: &[OrderLine], fulfilment: Fulfilment) -> RouteRequest<'_> {
        RouteRequest {
            lines,
            fulfilment,
            customer_lat: TAIPEI.0,
            customer_lon: TAIPEI.1,
            pickup_location_id: None,
            max_distance_km: None,
            allow_split: false,
        }
    }

    fn chosen_ids(out: &RouteOutcome) -> Vec<&str> {
        out.assignments
            .iter()
            .map(|a| a.location_id.as_str())
            .collect()
    }

    fn entry<'o>(out: &'o RouteOutcome, id: &str) -> &'o Considered {
        out.explanation
            .iter()
            .find(|c| c.location_id == id)
            .expect("explained")
    }

    #[test]
    fn haversine_between_taiwan_cities() {
        // Independently: vector form R * atan2(|a x b|, a . b) gives 297.723 and 132.721 km.
        let tk = haversine_km(TAIPEI.0, TAIPEI.1, KAOHSIUNG.0, KAOHSIUNG.1);
        assert!((tk - 297.723).abs() < 0.5, "{tk}");
        let tt = haversine_km(TAIPEI.0, TAIPEI.1, TAICHUNG.0, TAICHUNG.1);
        assert!((tt - 132.721).abs() < 0.5, "{tt}");
        assert!(
            (haversine_km(north(10.0).0, north(10.0).1, TAIPEI.0, TAIPEI.1) - 10.0).abs() < 1e-6
        );
    }

    #[test]
    fn merge_lines_sums_repeats_in_first_seen_order() {
        let merged = merge_lines(&[line("B", 1), line("A", 2), line("B", 3), line("C", 1)]);
        assert_eq!(merged, vec![line("B", 4), line("A", 2), line("C", 1)]);
        assert!(merge_lines(&[]).is_empty());
    }

    #[test]
    fn nearest_store_with_everything_beats_nearer_store_missing_a_line() {
        let lines = [line("TEE-RED-M", 2), line("CAP", 1)];
        let cands = [
            store("NEAR", north(2.0), &[("TEE-RED-M", 1), ("CAP", 5)]),
            store("MID", north(10.0), &[("TEE-RED-M", 2), ("CAP", 1)]),
            store("FAR", north(30.0), &[("TEE-RED-M", 9), ("CAP", 9)]),
        ];
        for f in [Fulfilment::Pickup, Fulfilment::Delivery] {
            let out = route(&req(&lines, f), &cands);
            assert_eq!(chosen_ids(&out), ["MID"]);
            assert_eq!(out.assignments[0].lines, lines.to_vec());
            assert_eq!(out.assignments[0].distance_km, 10.0);
            let ids: Vec<&str> = out
                .explanation
                .iter()
                .map(|c| c.location_id.as_str())
                .collect();
            assert_eq!(ids, ["NEAR", "MID", "FAR"]);
            let near = entry(&out, "NEAR");
            assert_eq!(
                (near.decision, near.code),
                (Decision::Skipped, ReasonCode::NoStock)
            );
            assert_eq!(near.reason, "no stock for line TEE-RED-M (needs 2, has 1)");
            assert_eq!(
                entry(&out, "MID").reason,
                "nearest location with every line"
            );
            assert_eq!(entry(&out, "FAR").code, ReasonCode::NotNeeded);
            assert_eq!(
                entry(&out, "FAR").reason,
                "another location nearer with every line"
            );
            assert!(out.alternatives.is_empty());
        }
    }

    #[test]
    fn split_only_when_allowed() {
        let lines = [line("A", 1), line("B", 1)];
        let cands = [
            store("SA", north(5.0), &[("A", 1)]),
            store("SB", north(6.0), &[("B", 1)]),
        ];
        let mut r = req(&lines, Fulfilment::Delivery);
        let out = route(&r, &cands);
        assert!(out.assignments.is_empty());
        assert_eq!(
            entry(&out, "SA").reason,
            "no stock for line B (needs 1, has 0)"
        );
        r.allow_split = true;
        let out = route(&r, &cands);
        assert_eq!(chosen_ids(&out), ["SA", "SB"]);
        assert_eq!(entry(&out, "SA").reason, "gives 1 of 1 A");
        assert_eq!(entry(&out, "SB").code, ReasonCode::Chosen);
        // A pickup never splits.
        let mut p = req(&lines, Fulfilment::Pickup);
        p.allow_split = true;
        assert!(route(&p, &cands).assignments.is_empty());
    }

    #[test]
    fn split_prefers_fewest_shipments_even_if_farther() {
        let lines = [line("A", 1), line("B", 1), line("C", 1)];
        let cands = [
            store("N1", north(1.0), &[("A", 1)]),
            store("N2", north(2.0), &[("B", 1)]),
            store("N3", north(3.0), &[("C", 1)]),
            store("F1", north(80.0), &[("A", 1), ("B", 1)]),
            store("F2", north(90.0), &[("C", 1)]),
        ];
        let mut r = req(&lines, Fulfilment::Delivery);
        r.allow_split = true;
        let out = route(&r, &cands);
        // N3 (C, 3 km) beats F2 (C, 90 km) as F1's partner.
        assert_eq!(chosen_ids(&out), ["N3", "F1"]);
        assert_eq!(out.assignments[0].lines, vec![line("C", 1)]);
        assert_eq!(out.assignments[1].lines, vec![line("A", 1), line("B", 1)]);
        assert_eq!(entry(&out, "F1").reason, "gives 1 of 1 A, 1 of 1 B");
        for id in ["N1", "N2", "F2"] {
            let e = entry(&out, id);
            assert_eq!(e.code, ReasonCode::NotNeeded, "{id}");
            assert_eq!(e.reason, "covered by fewer or nearer shipments");
        }
    }

    #[test]
    fn split_picks_least_total_distance_and_nearest_chosen_per_line() {
        let lines = [line("A", 1), line("B", 1), line("C", 1)];
        let cands = [
            // {X, Y}: 10 + 50 = 60; {X, Z}: 10 + 40 = 50 (Z also has A, but X is nearer).
            store("X", north(10.0), &[("A", 1), ("B", 1)]),
            store("Y", north(50.0), &[("C", 1)]),
            store("Z", north(40.0), &[("A", 1), ("C", 1)]),
            store("W", north(45.0), &[("B", 1), ("C", 1)]),
        ];
        let mut r = req(&lines, Fulfilment::Delivery);
        r.allow_split = true;
        let out = route(&r, &cands);
        assert_eq!(chosen_ids(&out), ["X", "Z"]);
        assert_eq!(out.assignments[0].lines, vec![line("A", 1), line("B", 1)]);
        assert_eq!(out.assignments[1].lines, vec![line("C", 1)]);
    }

    #[test]
    fn split_beyond_three_shipments_uses_greedy() {
        let skus = ["A", "B", "C", "D"];
        let lines: Vec<OrderLine> = skus.iter().map(|s| line(s, 1)).collect();
        let cands: Vec<Candidate> = skus
            .iter()
            .enumerate()
            .map(|(i, s)| store(&format!("S{i}"), north(1.0 + i as f64), &[(s, 1)]))
            .collect();
        let mut r = req(&lines, Fulfilment::Delivery);
        r.allow_split = true;
        let out = route(&r, &cands);
        assert_eq!(chosen_ids(&out), ["S0", "S1", "S2", "S3"]);
    }

    #[test]
    fn split_impossible_names_the_line_short_in_all() {
        let lines = [line("A", 1), line("B", 4)];
        let cands = [
            store("SA", north(5.0), &[("A", 1), ("B", 2)]),
            store("SB", north(6.0), &[("B", 1)]),
            store("SC", north(7.0), &[("A", 1)]),
        ];
        let mut r = req(&lines, Fulfilment::Delivery);
        r.allow_split = true;
        let out = route(&r, &cands);
        assert!(out.assignments.is_empty());
        assert_eq!(
            entry(&out, "SA").reason,
            "no stock for line B (needs 4, has 2); the eligible locations have 3 of it in all"
        );
        assert_eq!(entry(&out, "SB").code, ReasonCode::NoStock);
        assert_eq!(
            entry(&out, "SC").reason,
            "no stock for line B (needs 4, has 0); the eligible locations have 3 of it in all"
        );
    }

    #[test]
    fn capacity_and_max_distance_are_respected_and_explained() {
        let lines = [line("A", 1)];
        let mut full = store("FULL", north(1.0), &[("A", 5)]);
        full.capacity_left = Some(0);
        let far = store("FAR", KAOHSIUNG, &[("A", 5)]);
        let mut ok = store("OK", north(20.0), &[("A", 5)]);
        ok.capacity_left = Some(1);
        let mut r = req(&lines, Fulfilment::Delivery);
        r.max_distance_km = Some(50.0);
        let out = route(&r, &[full, far, ok]);
        assert_eq!(chosen_ids(&out), ["OK"]);
        let e = entry(&out, "FULL");
        assert_eq!(
            (e.code, e.reason.as_str()),
            (ReasonCode::CapacityFull, "capacity full today")
        );
        let e = entry(&out, "FAR");
        assert_eq!(e.code, ReasonCode::TooFar);
        assert_eq!(e.reason, "too far (297.7 km > 50 km)");
        assert_eq!(e.distance_km, 297.7);
    }

    #[test]
    fn pickup_at_a_store_lacking_stock_offers_alternatives_by_distance() {
        let lines = [line("A", 2)];
        let mut cands = vec![store("HERE", north(1.0), &[("A", 1)])];
        for (i, km) in [30.0, 7.0, 12.0, 3.0, 50.0, 20.0, 9.0].iter().enumerate() {
            cands.push(store(&format!("ALT{i}"), north(*km), &[("A", 2)]));
        }
        let mut disabled = store("NOPICK", north(2.0), &[("A", 9)]);
        disabled.pickup = false;
        cands.push(disabled);
        let mut r = req(&lines, Fulfilment::Pickup);
        r.pickup_location_id = Some("HERE");
        let out = route(&r, &cands);
        assert!(out.assignments.is_empty());
        assert_eq!(
            out.alternatives,
            vec![
                ("ALT3".to_owned(), 3.0),
                ("ALT1".to_owned(), 7.0),
                ("ALT6".to_owned(), 9.0),
                ("ALT2".to_owned(), 12.0),
                ("ALT5".to_owned(), 20.0),
            ]
        );
        assert_eq!(
            entry(&out, "HERE").reason,
            "no stock for line A (needs 2, has 1)"
        );
        assert_eq!(entry(&out, "NOPICK").code, ReasonCode::NotRequested);
        let alt = entry(&out, "ALT3");
        assert_eq!(alt.code, ReasonCode::NotRequested);
        assert!(alt.reason.contains("could serve"));
        assert_eq!(out.explanation.len(), cands.len());

        // With stock it is held there, however near the others are.
        r.pickup_location_id = Some("ALT4");
        let out = route(&r, &cands);
        assert_eq!(chosen_ids(&out), ["ALT4"]);
        assert!(out.alternatives.is_empty());
        assert_eq!(
            entry(&out, "ALT3").reason,
            "not the requested pickup location"
        );

        // An unknown location serves nothing but still gets alternatives.
        r.pickup_location_id = Some("GONE");
        let out = route(&r, &cands);
        assert!(out.assignments.is_empty());
        assert_eq!(out.alternatives.len(), 5);
    }

    #[test]
    fn pickup_disabled_and_non_stores_are_skipped() {
        let lines = [line("A", 1)];
        let mut off = store("OFF", north(1.0), &[("A", 9)]);
        off.pickup = false;
        let mut wh = store("WH", north(2.0), &[("A", 9)]);
        wh.kind = LocationKind::Warehouse;
        let on = store("ON", north(5.0), &[("A", 9)]);
        let out = route(&req(&lines, Fulfilment::Pickup), &[off.clone(), wh, on]);
        assert_eq!(chosen_ids(&out), ["ON"]);
        assert_eq!(entry(&out, "OFF").code, ReasonCode::PickupDisabled);
        assert_eq!(entry(&out, "OFF").reason, "pickup disabled");
        assert_eq!(entry(&out, "WH").code, ReasonCode::PickupDisabled);

        // Requested but disabled: no assignment, the reason says why.
        let mut r = req(&lines, Fulfilment::Pickup);
        r.pickup_location_id = Some("OFF");
        let out = route(&r, &[off]);
        assert!(out.assignments.is_empty());
        assert_eq!(entry(&out, "OFF").code, ReasonCode::PickupDisabled);
    }

    #[test]
    fn delivery_ships_from_ship_from_stores_warehouses_and_online() {
        let lines = [line("A", 1)];
        let mut shop = store("SHOP", north(1.0), &[("A", 9)]);
        shop.ship_from = false;
        let mut web = store("WEB", north(3.0), &[("A", 9)]);
        web.kind = LocationKind::Online;
        web.ship_from = false;
        let mut wh = store("WH", north(2.0), &[("A", 9)]);
        wh.kind = LocationKind::Warehouse;
        wh.ship_from = false;
        let out = route(
            &req(&lines, Fulfilment::Delivery),
            &[shop.clone(), web.clone(), wh],
        );
        assert_eq!(chosen_ids(&out), ["WH"]);
        assert_eq!(entry(&out, "SHOP").code, ReasonCode::DoesNotShip);
        assert_eq!(entry(&out, "SHOP").reason, "does not ship");
        let out = route(&req(&lines, Fulfilment::Delivery), &[shop, web]);
        assert_eq!(chosen_ids(&out), ["WEB"]);
    }

    #[test]
    fn output_is_deterministic_and_sorted() {
        let lines = [line("A", 1), line("B", 1)];
        let mut cands = vec![
            store("B2", north(5.0), &[("A", 1)]),
            store("B1", north(5.0), &[("A", 1)]),
            store("C", north(7.0), &[("B", 1)]),
            store("D", north(7.0), &[("A", 1), ("B", 1)]),
            store("E", north(7.0), &[("A", 1), ("B", 1)]),
        ];
        let mut r = req(&lines, Fulfilment::Delivery);
        r.allow_split = true;
        let out = route(&r, &cands);
        let ids: Vec<&str> = out
            .explanation
            .iter()
            .map(|c| c.location_id.as_str())
            .collect();
        assert_eq!(ids, ["B1", "B2", "C", "D", "E"]);
        assert_eq!(chosen_ids(&out), ["D"]);
        cands.reverse();
        assert_eq!(route(&r, &cands), out);
        let json = serde_json::to_value(&out).expect("json");
        assert_eq!(json["explanation"][3]["decision"], "chosen");
        assert_eq!(json["explanation"][4]["code"], "not_needed");
        let f: Fulfilment = serde_json::from_str("\"delivery\"").expect("fulfilment");
        assert_eq!(f, Fulfilment::Delivery);
    }

    #[test]
    fn orders_of_more_than_64_lines_split_exactly() {
        // 70 lines; three far stores together hold everything, many near ones a line each.
        let skus: Vec<String> = (0..70).map(|i| format!("SKU-{i:02}")).collect();
        let lines: Vec<OrderLine> = skus.iter().map(|s| line(s, 1)).collect();
        let part = |range: std::ops::Range<usize>| -> Vec<(&str, i64)> {
            skus[range].iter().map(|s| (s.as_str(), 1)).collect()
        };
        let mut cands: Vec<Candidate> = (0..70)
            .map(|i| {
                store(
                    &format!("N{i:02}"),
                    north(1.0 + i as f64 / 10.0),
                    &part(i..i + 1),
                )
            })
            .collect();
        cands.push(store("F1", north(100.0), &part(0..30)));
        cands.push(store("F2", north(101.0), &part(30..60)));
        cands.push(store("F3", north(102.0), &part(60..70)));
        cands.push(store("F4", north(150.0), &part(25..70)));
        let mut r = req(&lines, Fulfilment::Delivery);
        r.allow_split = true;
        let out = route(&r, &cands);
        // {F1, F4} covers everything in 2 shipments: fewer beats nearer.
        assert_eq!(chosen_ids(&out), ["F1", "F4"]);
        assert_eq!(out.assignments[0].lines.len(), 30);
        assert_eq!(out.assignments[1].lines.len(), 40);
        cands.pop();
        let out = route(&r, &cands);
        assert_eq!(chosen_ids(&out), ["F1", "F2", "F3"]);
    }

    // ---- Properties ----

    const SKUS: [&str; 16] = [
        "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K", "L", "M", "N", "O", "P",
    ];

    fn arb_candidate(i: usize, pool: usize, stock_max: i64) -> impl Strategy<Value = Candidate> {
        (
            prop::sample::select(vec![
                LocationKind::Store,
                LocationKind::Store,
                LocationKind::Warehouse,
                LocationKind::Online,
            ]),
            (22.0f64..25.3, 120.0f64..121.9),
            any::<bool>(),
            prop::bool::weighted(0.7),
            prop::collection::vec(0i64..stock_max, pool),
            prop::option::of(0i64..3),
        )
            .prop_map(
                move |(kind, (lat, lon), pickup, ship_from, stock, cap)| Candidate {
                    location_id: format!("L{i:02}"),
                    kind,
                    lat,
                    lon,
                    pickup,
                    ship_from,
                    available: SKUS
                        .iter()
                        .zip(stock)
                        .filter(|(_, q)| *q > 0)
                        .map(|(s, q)| (s.to_string(), q))
                        .collect(),
                    capacity_left: cap,
                },
            )
    }

    fn arb_candidates(pool: usize, stock_max: i64) -> impl Strategy<Value = Vec<Candidate>> {
        (0usize..12).prop_flat_map(move |n| {
            (0..n)
                .map(|i| arb_candidate(i, pool, stock_max))
                .collect::<Vec<_>>()
        })
    }

    fn arb_lines(pool: usize, min_lines: usize) -> impl Strategy<Value = Vec<OrderLine>> {
        prop::sample::subsequence(SKUS[..pool].to_vec(), min_lines..=pool).prop_flat_map(|skus| {
            prop::collection::vec(1i64..3, skus.len()).prop_map(move |qs| {
                skus.iter()
                    .zip(qs)
                    .map(|(s, q)| line(s, q))
                    .collect::<Vec<_>>()
            })
        })
    }

    #[derive(Debug, Clone)]
    struct Case {
        lines: Vec<OrderLine>,
        cands: Vec<Candidate>,
        fulfilment: Fulfilment,
        customer: (f64, f64),
        pickup_at: Option<String>,
        max_km: Option<f64>,
        allow_split: bool,
    }

    /// Small orders (1-5 lines of 5 SKUs): the table path of the split search.
    fn arb_case() -> impl Strategy<Value = Case> {
        arb_case_with(5, 1, 4)
    }

    /// Large orders (13-16 lines): the scan path of the split search.
    fn arb_big_case() -> impl Strategy<Value = Case> {
        arb_case_with(16, TABLE_MAX_LINES + 1, 7)
    }

    fn arb_case_with(pool: usize, min_lines: usize, stock_max: i64) -> impl Strategy<Value = Case> {
        (
            arb_lines(pool, min_lines),
            arb_candidates(pool, stock_max),
            prop::sample::select(vec![Fulfilment::Pickup, Fulfilment::Delivery]),
            (22.0f64..25.3, 120.0f64..121.9),
            prop::option::weighted(0.3, 0usize..13),
            prop::option::of(50.0f64..400.0),
            any::<bool>(),
        )
            .prop_map(
                |(lines, cands, fulfilment, customer, pick, max_km, allow_split)| {
                    let pickup_at = pick.map(|i| {
                        cands
                            .get(i)
                            .map_or("NOPE".to_owned(), |c| c.location_id.clone())
                    });
                    Case {
                        lines,
                        cands,
                        fulfilment,
                        customer,
                        pickup_at,
                        max_km,
                        allow_split,
                    }
                },
            )
    }

    impl Case {
        fn req(&self) -> RouteRequest<'_> {
            RouteRequest {
                lines: &self.lines,
                fulfilment: self.fulfilment,
                customer_lat: self.customer.0,
                customer_lon: self.customer.1,
                pickup_location_id: self.pickup_at.as_deref(),
                max_distance_km: self.max_km,
                allow_split: self.allow_split,
            }
        }

        fn dist(&self, c: &Candidate) -> f64 {
            haversine_km(self.customer.0, self.customer.1, c.lat, c.lon)
        }

        /// Independent restatement of eligibility, distance and capacity.
        fn usable(&self, c: &Candidate) -> bool {
            let eligible = match self.fulfilment {
                Fulfilment::Pickup => {
                    c.kind == LocationKind::Store
                        && c.pickup
                        && self
                            .pickup_at
                            .as_deref()
                            .is_none_or(|id| id == c.location_id)
                }
                Fulfilment::Delivery => c.ship_from || c.kind != LocationKind::Store,
            };
            eligible
                && self.max_km.is_none_or(|m| self.dist(c) <= m)
                && c.capacity_left.is_none_or(|n| n > 0)
        }

        fn serves(&self, c: &Candidate, l: &OrderLine) -> bool {
            c.available.get(&l.sku).copied().unwrap_or(0) >= l.quantity
        }

        /// Reference greedy over raw candidates: shipments it needs, if it finds a cover.
        fn greedy_count(&self) -> Option<usize> {
            let usable: Vec<&Candidate> = self.cands.iter().filter(|c| self.usable(c)).collect();
            let mut left: Vec<&OrderLine> = self.lines.iter().collect();
            let mut count = 0;
            while !left.is_empty() {
                // Most uncovered lines, then nearest, then id.
                let gain = |c: &Candidate| left.iter().filter(|l| self.serves(c, l)).count();
                let c = *usable.iter().min_by(|a, b| {
                    gain(b)
                        .cmp(&gain(a))
                        .then(self.dist(a).total_cmp(&self.dist(b)))
                        .then(a.location_id.cmp(&b.location_id))
                })?;
                if gain(c) == 0 {
                    return None;
                }
                left.retain(|l| !self.serves(c, l));
                count += 1;
            }
            Some(count)
        }

        /// Brute force: the fewest shipments (<= 3) and the least total distance for it.
        fn best_small_cover(&self) -> Option<(usize, f64)> {
            let usable: Vec<&Candidate> = self.cands.iter().filter(|c| self.usable(c)).collect();
            let covers = |set: &[&Candidate]| {
                self.lines
                    .iter()
                    .all(|l| set.iter().any(|c| self.serves(c, l)))
            };
            let total = |set: &[&Candidate]| set.iter().map(|c| self.dist(c)).sum::<f64>();
            let mut best: Option<(usize, f64)> = None;
            let mut offer = |set: &[&Candidate]| {
                if covers(set) {
                    let t = (set.len(), total(set));
                    if best.is_none_or(|b| t.0 < b.0 || (t.0 == b.0 && t.1 < b.1)) {
                        best = Some(t);
                    }
                }
            };
            for i in 0..usable.len() {
                offer(&[usable[i]]);
                for j in i + 1..usable.len() {
                    offer(&[usable[i], usable[j]]);
                    for k in j + 1..usable.len() {
                        offer(&[usable[i], usable[j], usable[k]]);
                    }
                }
            }
            best
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn assignments_are_sound(case in arb_case()) {
            let out = route(&case.req(), &case.cands);
            let by_id = |id: &str| case.cands.iter().find(|c| c.location_id == id).expect("known");

            // One explanation entry per candidate, nearest first.
            prop_assert_eq!(out.explanation.len(), case.cands.len());
            let mut ids: Vec<&str> = out.explanation.iter().map(|c| c.location_id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            prop_assert_eq!(ids.len(), case.cands.len());
            let ds: Vec<f64> = out.explanation.iter().map(|e| case.dist(by_id(&e.location_id))).collect();
            prop_assert!(ds.windows(2).all(|w| w[0] <= w[1]));

            if !out.assignments.is_empty() {
                // Every line held exactly as asked, each part at a usable location that has it.
                let mut assigned: HashMap<&str, i64> = HashMap::new();
                for a in &out.assignments {
                    let c = by_id(&a.location_id);
                    prop_assert!(case.usable(c), "{} not usable", a.location_id);
                    prop_assert!(!a.lines.is_empty());
                    for l in &a.lines {
                        prop_assert!(l.quantity > 0);
                        prop_assert!(case.serves(c, l), "{} lacks {}", a.location_id, l.sku);
                        *assigned.entry(&l.sku).or_default() += l.quantity;
                    }
                }
                let want: HashMap<&str, i64> =
                    case.lines.iter().map(|l| (l.sku.as_str(), l.quantity)).collect();
                prop_assert_eq!(assigned, want);
                let split_ok = case.fulfilment == Fulfilment::Delivery && case.allow_split;
                prop_assert!(out.assignments.len() == 1 || split_ok);
                prop_assert!(out.alternatives.is_empty());
            }

            // Chosen entries are exactly the assigned locations.
            let mut chosen: Vec<&str> = out.explanation.iter()
                .filter(|e| e.decision == Decision::Chosen)
                .map(|e| e.location_id.as_str())
                .collect();
            chosen.sort_unstable();
            let mut assigned: Vec<&str> = chosen_ids(&out);
            assigned.sort_unstable();
            prop_assert_eq!(chosen, assigned);
            for e in &out.explanation {
                prop_assert_eq!(e.decision == Decision::Chosen, e.code == ReasonCode::Chosen);
                prop_assert!(!e.reason.is_empty());
            }

            // Alternatives: nearest first, at most 5, each could serve the pickup.
            prop_assert!(out.alternatives.len() <= MAX_ALTERNATIVES);
            for (id, _) in &out.alternatives {
                let c = by_id(id);
                prop_assert!(c.kind == LocationKind::Store && c.pickup);
                prop_assert!(case.lines.iter().all(|l| case.serves(c, l)));
            }
        }

        #[test]
        fn split_is_optimal_up_to_three_and_never_worse_than_greedy(case in arb_case()) {
            check_split(case)?;
        }

        #[test]
        fn split_of_large_orders_is_optimal_up_to_three(case in arb_big_case()) {
            check_split(case)?;
        }
    }

    fn check_split(mut case: Case) -> Result<(), TestCaseError> {
        case.fulfilment = Fulfilment::Delivery;
        case.allow_split = true;
        let out = route(&case.req(), &case.cands);
        // Lines no usable location holds whole are split in quantity: see `quantity_tests`.
        let whole = case.lines.iter().all(|l| {
            case.cands
                .iter()
                .any(|c| case.usable(c) && case.serves(c, l))
        });
        if !whole {
            return Ok(());
        }
        let greedy = case.greedy_count();
        prop_assert_eq!(out.assignments.is_empty(), greedy.is_none());
        if let Some(g) = greedy {
            prop_assert!(out.assignments.len() <= g);
        }
        if let Some((count, total)) = case.best_small_cover() {
            prop_assert_eq!(out.assignments.len(), count);
            let ours: f64 = out
                .assignments
                .iter()
                .map(|a| {
                    case.dist(
                        case.cands
                            .iter()
                            .find(|c| c.location_id == a.location_id)
                            .expect("known"),
                    )
                })
                .sum();
            prop_assert!(ours <= total + 1e-9, "ours {} > best {}", ours, total);
        }
        // Without split the outcome is a single location or nothing.
        case.allow_split = false;
        prop_assert!(route(&case.req(), &case.cands).assignments.len() <= 1);
        Ok(())
    }
}
