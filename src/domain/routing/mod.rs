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

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::location::LocationKind;

mod cover;
mod explain;
pub mod group;
mod quantity;
#[cfg(test)]
mod quantity_tests;
mod route;
#[cfg(test)]
mod tests;

pub use route::route;

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
