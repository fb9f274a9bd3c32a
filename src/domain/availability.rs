//! What can be promised: `available = max(0, on_hand - reserved - safety_stock)`, summed over the
//! locations a sales channel may sell from.

use serde::{Deserialize, Serialize};

use super::location::LocationKind;

/// Available-to-promise of one level.
pub fn available(on_hand: i64, reserved: i64, safety_stock: i64) -> i64 {
    on_hand
        .saturating_sub(reserved)
        .saturating_sub(safety_stock)
        .max(0)
}

/// The sum of per-location availabilities (each >= 0). Levels may each reach i64::MAX, so a
/// plain sum overflows (a panic in debug, a negative total in release); the total saturates
/// instead, which never promises more than the locations hold.
pub fn network_total(available: impl IntoIterator<Item = i64>) -> i64 {
    available
        .into_iter()
        .fold(0i64, |acc, a| acc.saturating_add(a.max(0)))
}

/// Which locations a channel may sell from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Every location.
    #[default]
    All,
    /// Locations that ship to a customer: `ship_from` stores, warehouses and the e-shop.
    Online,
}

impl Channel {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "all" | "" => Some(Channel::All),
            "online" => Some(Channel::Online),
            _ => None,
        }
    }

    pub fn includes(self, kind: LocationKind, ship_from: bool) -> bool {
        match self {
            Channel::All => true,
            Channel::Online => {
                ship_from || matches!(kind, LocationKind::Warehouse | LocationKind::Online)
            }
        }
    }
}

/// One level as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelQuantities {
    pub location_id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub in_transit: i64,
    pub version: i64,
}

/// What a location contributes to availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationTerms {
    pub kind: LocationKind,
    pub ship_from: bool,
    pub safety_stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct LocationAvailability {
    pub location_id: String,
    pub kind: LocationKind,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Shipped here by transfers and not yet received: not available, but coming.
    pub in_transit: i64,
}

/// Stock on its way to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InTransit {
    pub to_location_id: String,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkuAvailability {
    pub available: i64,
    pub locations: Vec<LocationAvailability>,
    /// Per destination, what transfers have shipped and not yet delivered.
    pub in_transit: Vec<InTransit>,
}

/// Combines levels with their locations' terms for a channel. Levels of locations not known
/// (or not in the channel) are left out; the result is sorted by location id.
pub fn summarize(
    levels: &[LevelQuantities],
    terms: impl Fn(&str) -> Option<LocationTerms>,
    channel: Channel,
) -> SkuAvailability {
    summarize_with(
        levels,
        terms,
        |_, t| channel.includes(t.kind, t.ship_from),
        |_, a| a,
    )
}

/// As `summarize`, for any channel: `includes` says which locations it sells from, `pool`
/// turns a location's available (given with its location id) into what is promised there: the
/// channel's share of it, after any supply that `at=` counts.
pub fn summarize_with(
    levels: &[LevelQuantities],
    terms: impl Fn(&str) -> Option<LocationTerms>,
    includes: impl Fn(&str, &LocationTerms) -> bool,
    pool: impl Fn(&str, i64) -> i64,
) -> SkuAvailability {
    let mut locations: Vec<LocationAvailability> = levels
        .iter()
        .filter_map(|l| {
            let t = terms(&l.location_id)?;
            includes(&l.location_id, &t).then(|| LocationAvailability {
                location_id: l.location_id.clone(),
                kind: t.kind,
                on_hand: l.on_hand,
                reserved: l.reserved,
                available: pool(
                    &l.location_id,
                    available(l.on_hand, l.reserved, t.safety_stock),
                ),
                in_transit: l.in_transit,
            })
        })
        .collect();
    locations.sort_by(|a, b| a.location_id.cmp(&b.location_id));
    SkuAvailability {
        available: network_total(locations.iter().map(|l| l.available)),
        in_transit: locations
            .iter()
            .filter(|l| l.in_transit > 0)
            .map(|l| InTransit {
                to_location_id: l.location_id.clone(),
                quantity: l.in_transit,
            })
            .collect(),
        locations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_totals_do_not_overflow() {
        let level = |id: &str| LevelQuantities {
            location_id: id.into(),
            on_hand: i64::MAX,
            reserved: 0,
            in_transit: 0,
            version: 1,
        };
        let terms = |_: &str| {
            Some(LocationTerms {
                kind: LocationKind::Warehouse,
                ship_from: true,
                safety_stock: 0,
            })
        };
        let a = summarize(&[level("A"), level("B")], terms, Channel::All);
        assert_eq!(a.available, i64::MAX);
        assert_eq!(network_total([i64::MAX, i64::MIN, 5]), i64::MAX);
        assert_eq!(network_total([1, 2, -3]), 3);
    }
    use proptest::prelude::*;

    #[test]
    fn available_subtracts_reserved_and_safety_stock_and_never_goes_negative() {
        assert_eq!(available(10, 3, 2), 5);
        assert_eq!(available(10, 3, 0), 7);
        assert_eq!(available(2, 3, 0), 0);
        assert_eq!(available(-5, 0, 0), 0);
        assert_eq!(available(5, 0, 5), 0);
    }

    #[test]
    fn online_channel_counts_only_shipping_locations() {
        let levels: Vec<LevelQuantities> = ["S1", "S2", "WH", "WEB"]
            .iter()
            .map(|id| LevelQuantities {
                location_id: id.to_string(),
                on_hand: 10,
                reserved: 1,
                in_transit: 0,
                version: 1,
            })
            .collect();
        let terms = |id: &str| {
            Some(match id {
                "S1" => LocationTerms {
                    kind: LocationKind::Store,
                    ship_from: false,
                    safety_stock: 0,
                },
                "S2" => LocationTerms {
                    kind: LocationKind::Store,
                    ship_from: true,
                    safety_stock: 2,
                },
                "WH" => LocationTerms {
                    kind: LocationKind::Warehouse,
                    ship_from: false,
                    safety_stock: 0,
                },
                "WEB" => LocationTerms {
                    kind: LocationKind::Online,
                    ship_from: false,
                    safety_stock: 0,
                },
                _ => return None,
            })
        };
        let all = summarize(&levels, terms, Channel::All);
        assert_eq!(all.available, 9 + 7 + 9 + 9);
        assert_eq!(all.locations.len(), 4);
        let online = summarize(&levels, terms, Channel::Online);
        assert_eq!(online.available, 7 + 9 + 9);
        assert!(online.locations.iter().all(|l| l.location_id != "S1"));
    }

    #[test]
    fn unknown_locations_are_left_out() {
        let levels = vec![LevelQuantities {
            location_id: "GONE".into(),
            on_hand: 5,
            reserved: 0,
            in_transit: 2,
            version: 1,
        }];
        let a = summarize(&levels, |_| None, Channel::All);
        assert_eq!(a.available, 0);
        assert!(a.in_transit.is_empty());
    }

    proptest! {
        #[test]
        fn available_is_bounded(on_hand in -1000i64..1000, reserved in 0i64..1000, safety in 0i64..100) {
            let a = available(on_hand, reserved, safety);
            prop_assert!(a >= 0);
            prop_assert!(a <= on_hand.max(0));
            prop_assert!(a + reserved + safety >= on_hand || a == 0);
        }
    }
}
