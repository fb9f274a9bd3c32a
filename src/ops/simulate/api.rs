//! The wire shapes the simulator sends and reads: the contract's, written from the client's
//! side (only the fields it uses are read back).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub sku: String,
    pub quantity: i64,
}

pub fn lines(v: &[(String, i64)]) -> Vec<Line> {
    v.iter()
        .map(|(sku, quantity)| Line {
            sku: sku.clone(),
            quantity: *quantity,
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct HoldRequest<'a> {
    pub reservation_id: &'a str,
    pub location_id: &'a str,
    pub lines: Vec<Line>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct HoldAnswer {
    pub reservation_id: String,
}

#[derive(Debug, Serialize)]
pub struct Customer {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Serialize)]
pub struct RouteRequest<'a> {
    pub order_id: &'a str,
    pub lines: Vec<Line>,
    pub fulfilment: &'a str,
    pub customer: Customer,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup_location_id: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
pub struct RouteAnswer {
    pub assignments: Vec<Assignment>,
}

#[derive(Debug, Deserialize)]
pub struct Assignment {
    pub location_id: String,
    pub lines: Vec<Line>,
    pub reservation_id: Option<String>,
}

/// A movement as published on `<prefix>.movements.<location_id>`.
#[derive(Debug, Serialize)]
pub struct MovementBody<'a> {
    pub event_id: String,
    pub location_id: &'a str,
    pub sku: &'a str,
    pub kind: &'a str,
    pub quantity: i64,
    pub occurred_at: DateTime<Utc>,
    pub source: &'a str,
    /// The simulated local time, for whoever reads the ledger.
    pub reference: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_location_id: Option<&'a str>,
}
