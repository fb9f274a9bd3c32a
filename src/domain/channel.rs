//! Sales channel pools: which locations a channel sells from, and how much of their available
//! it may promise. Per location:
//! `min(available - buffer_units, floor(available * max_percent / 100))`, never below 0; the
//! channel's total is the sum over its locations. A per-SKU override may replace the buffer or
//! the percent, or switch the SKU off for the channel.
//!
//! The formula is applied to the location's current available, so it is recomputed after every
//! hold: a hold of one unit lowers a percent-limited channel's total by less than one unit
//! (30% of 99 is still 29). A fixed pool ("30 of these 100") is a buffer: `buffer_units: 70`.

use serde::{Deserialize, Serialize};

use super::ids::is_valid_location_id;
use super::location::LocationKind;

/// The channels every installation has; their location selector is fixed.
pub const ALL: &str = "all";
pub const ONLINE: &str = "online";

pub const DEFAULT_BUFFER_UNITS: i64 = 0;
pub const DEFAULT_MAX_PERCENT: i64 = 100;
/// Most locations one channel may list.
pub const MAX_LOCATIONS: usize = 10_000;

/// Which locations a channel sells from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every location.
    All,
    /// Locations that ship to a customer: `ship_from` stores, warehouses and the e-shop.
    ShipFrom,
    /// Exactly these (sorted, without repeats).
    Locations(Vec<String>),
}

impl Selector {
    pub fn as_str(&self) -> &'static str {
        match self {
            Selector::All => "all",
            Selector::ShipFrom => "ship_from",
            Selector::Locations(_) => "locations",
        }
    }

    /// The selector fixed for a built-in channel.
    pub fn built_in(channel: &str) -> Option<Self> {
        match channel {
            ALL => Some(Selector::All),
            ONLINE => Some(Selector::ShipFrom),
            _ => None,
        }
    }
}

/// `"all"`, `"ship_from"` or a list of location ids, as the API shows and takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LocationsField {
    Named(String),
    List(Vec<String>),
}

impl From<&Selector> for LocationsField {
    fn from(s: &Selector) -> Self {
        match s {
            Selector::Locations(ids) => LocationsField::List(ids.clone()),
            other => LocationsField::Named(other.as_str().to_owned()),
        }
    }
}

/// A channel's definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelDef {
    pub channel: String,
    pub selector: Selector,
    pub buffer_units: i64,
    pub max_percent: i64,
}

/// A channel as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    pub channel: String,
    pub locations: LocationsField,
    pub buffer_units: i64,
    pub max_percent: i64,
    pub built_in: bool,
}

impl From<&ChannelDef> for ChannelView {
    fn from(d: &ChannelDef) -> Self {
        ChannelView {
            channel: d.channel.clone(),
            locations: LocationsField::from(&d.selector),
            buffer_units: d.buffer_units,
            max_percent: d.max_percent,
            built_in: is_built_in(&d.channel),
        }
    }
}

pub fn is_built_in(channel: &str) -> bool {
    Selector::built_in(channel).is_some()
}

/// A channel name is a subject token, like a location id: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_name(name: &str) -> bool {
    is_valid_location_id(name)
}

impl ChannelDef {
    pub fn built_in(channel: &str) -> Option<Self> {
        Selector::built_in(channel).map(|selector| ChannelDef {
            channel: channel.to_owned(),
            selector,
            buffer_units: DEFAULT_BUFFER_UNITS,
            max_percent: DEFAULT_MAX_PERCENT,
        })
    }

    /// Whether the channel sells from this location.
    pub fn includes(&self, location_id: &str, kind: LocationKind, ship_from: bool) -> bool {
        match &self.selector {
            Selector::All => true,
            Selector::ShipFrom => {
                ship_from || matches!(kind, LocationKind::Warehouse | LocationKind::Online)
            }
            Selector::Locations(ids) => ids
                .binary_search_by(|id| id.as_str().cmp(location_id))
                .is_ok(),
        }
    }

    /// The terms for one SKU: the override's where it has one, else the channel's.
    pub fn terms(&self, o: Option<&SkuOverride>) -> Terms {
        Terms {
            buffer_units: o.and_then(|o| o.buffer_units).unwrap_or(self.buffer_units),
            max_percent: o.and_then(|o| o.max_percent).unwrap_or(self.max_percent),
            enabled: o.and_then(|o| o.enabled).unwrap_or(true),
        }
    }
}

/// What a channel may promise of one SKU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub buffer_units: i64,
    pub max_percent: i64,
    pub enabled: bool,
}

impl Terms {
    /// Everything, as the built-in channels without configuration.
    pub const IDENTITY: Terms = Terms {
        buffer_units: 0,
        max_percent: 100,
        enabled: true,
    };
}

/// A per-SKU override; `None` is the channel's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SkuOverride {
    pub buffer_units: Option<i64>,
    pub max_percent: Option<i64>,
    pub enabled: Option<bool>,
}

/// A channel's available at one location, from the location's available. Total for any input:
/// checked arithmetic, a percent outside 0..=100 clamped, a negative available or buffer
/// treated as 0.
pub fn pool_available(available: i64, t: Terms) -> i64 {
    if !t.enabled {
        return 0;
    }
    let available = available.max(0);
    let after_buffer = available.saturating_sub(t.buffer_units.max(0));
    // i128: available * 100 overflows i64 for large levels; the quotient fits back in i64
    // since the percent is at most 100.
    let share = i128::from(available) * i128::from(t.max_percent.clamp(0, 100)) / 100;
    let share = i64::try_from(share).unwrap_or(available);
    after_buffer.min(share).max(0)
}

/// Why a channel definition or override was refused: the field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        field,
        message: message.into(),
    }
}

/// `PUT /v1/channels/{channel}`: the whole definition (left-out buffer and percent are the
/// defaults).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelInput {
    pub locations: Option<LocationsField>,
    pub buffer_units: Option<i64>,
    pub max_percent: Option<i64>,
}

fn check_buffer(b: i64) -> Result<i64, Invalid> {
    if b < 0 {
        return Err(invalid("buffer_units", "`buffer_units` must be 0 or more"));
    }
    Ok(b)
}

fn check_percent(p: i64) -> Result<i64, Invalid> {
    if !(1..=100).contains(&p) {
        return Err(invalid(
            "max_percent",
            "`max_percent` must be between 1 and 100",
        ));
    }
    Ok(p)
}

impl ChannelInput {
    /// The definition, checked (except that listed locations exist: the caller asks).
    pub fn validate(self, channel: &str) -> Result<ChannelDef, Invalid> {
        if !is_valid_name(channel) {
            return Err(invalid(
                "channel",
                "a channel name must match [A-Za-z0-9_-]{1,64}",
            ));
        }
        let fixed = Selector::built_in(channel);
        let selector = match (self.locations, &fixed) {
            (None, Some(f)) => f.clone(),
            (None, None) => {
                return Err(invalid(
                    "locations",
                    "`locations` is required: a list of location ids, \"ship_from\" or \"all\"",
                ))
            }
            (Some(LocationsField::Named(n)), _) => match n.as_str() {
                "all" => Selector::All,
                "ship_from" => Selector::ShipFrom,
                _ => {
                    return Err(invalid(
                        "locations",
                        "`locations` is a list of location ids, \"ship_from\" or \"all\"",
                    ))
                }
            },
            (Some(LocationsField::List(ids)), _) => {
                if ids.is_empty() || ids.len() > MAX_LOCATIONS {
                    return Err(invalid(
                        "locations",
                        format!("`locations` must list 1 to {MAX_LOCATIONS} location ids"),
                    ));
                }
                if let Some(bad) = ids.iter().find(|id| !is_valid_location_id(id)) {
                    return Err(invalid(
                        "locations",
                        format!("{bad:?} is not a location id ([A-Za-z0-9_-]{{1,64}})"),
                    ));
                }
                let mut ids = ids;
                ids.sort_unstable();
                ids.dedup();
                Selector::Locations(ids)
            }
        };
        if let Some(f) = fixed {
            if selector != f {
                return Err(invalid(
                    "locations",
                    format!(
                        "the built-in channel {channel:?} always sells from {:?}",
                        f.as_str()
                    ),
                ));
            }
        }
        Ok(ChannelDef {
            channel: channel.to_owned(),
            selector,
            buffer_units: check_buffer(self.buffer_units.unwrap_or(DEFAULT_BUFFER_UNITS))?,
            max_percent: check_percent(self.max_percent.unwrap_or(DEFAULT_MAX_PERCENT))?,
        })
    }
}

impl SkuOverride {
    pub fn validate(self) -> Result<Self, Invalid> {
        if let Some(b) = self.buffer_units {
            check_buffer(b)?;
        }
        if let Some(p) = self.max_percent {
            check_percent(p)?;
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(buffer_units: i64, max_percent: i64) -> Terms {
        Terms {
            buffer_units,
            max_percent,
            enabled: true,
        }
    }

    #[test]
    fn formula_takes_the_smaller_of_buffer_and_percent() {
        assert_eq!(pool_available(100, t(70, 100)), 30);
        assert_eq!(pool_available(100, t(0, 30)), 30);
        assert_eq!(pool_available(99, t(0, 30)), 29);
        assert_eq!(pool_available(10, t(2, 50)), 5);
        assert_eq!(pool_available(10, t(7, 50)), 3);
        assert_eq!(pool_available(3, t(5, 100)), 0);
        assert_eq!(pool_available(1, t(0, 1)), 0);
        assert_eq!(pool_available(-4, t(0, 100)), 0);
        assert_eq!(pool_available(i64::MAX, t(0, 100)), i64::MAX);
        assert_eq!(pool_available(i64::MAX, t(i64::MAX, 100)), 0);
        assert_eq!(pool_available(i64::MAX, t(-1, 50)), i64::MAX / 2);
        assert_eq!(pool_available(5, t(0, i64::MIN)), 0);
        assert_eq!(pool_available(5, t(i64::MIN, i64::MAX)), 5);
    }

    #[test]
    fn overrides_replace_only_what_they_set() {
        let d = ChannelDef {
            channel: "mkt".into(),
            selector: Selector::All,
            buffer_units: 3,
            max_percent: 50,
        };
        assert_eq!(d.terms(None), t(3, 50));
        let o = SkuOverride {
            max_percent: Some(80),
            ..Default::default()
        };
        assert_eq!(d.terms(Some(&o)), t(3, 80));
        let off = SkuOverride {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(!d.terms(Some(&off)).enabled);
    }

    #[test]
    fn selectors() {
        let listed = ChannelInput {
            locations: Some(LocationsField::List(vec![
                "B".into(),
                "A".into(),
                "B".into(),
            ])),
            buffer_units: None,
            max_percent: None,
        }
        .validate("mkt")
        .expect("valid");
        assert_eq!(
            listed.selector,
            Selector::Locations(vec!["A".into(), "B".into()])
        );
        assert!(listed.includes("A", LocationKind::Store, false));
        assert!(!listed.includes("C", LocationKind::Warehouse, true));
        let online = ChannelDef::built_in(ONLINE).expect("built in");
        assert!(online.includes("X", LocationKind::Warehouse, false));
        assert!(online.includes("X", LocationKind::Store, true));
        assert!(!online.includes("X", LocationKind::Store, false));
    }

    #[test]
    fn bad_input_names_its_field() {
        let input =
            |locations: Option<LocationsField>, b: Option<i64>, p: Option<i64>| ChannelInput {
                locations,
                buffer_units: b,
                max_percent: p,
            };
        let all = || Some(LocationsField::Named("all".into()));
        let field = |r: Result<ChannelDef, Invalid>| r.expect_err("invalid").field;
        assert_eq!(
            field(input(all(), None, Some(0)).validate("m")),
            "max_percent"
        );
        assert_eq!(
            field(input(all(), None, Some(101)).validate("m")),
            "max_percent"
        );
        assert_eq!(
            field(input(all(), Some(-1), None).validate("m")),
            "buffer_units"
        );
        assert_eq!(
            field(input(Some(LocationsField::List(vec![])), None, None).validate("m")),
            "locations"
        );
        assert_eq!(field(input(None, None, None).validate("m")), "locations");
        assert_eq!(
            field(input(Some(LocationsField::Named("some".into())), None, None).validate("m")),
            "locations"
        );
        assert_eq!(field(input(all(), None, None).validate("a.b")), "channel");
        assert_eq!(field(input(all(), None, None).validate("")), "channel");
        // Built-ins keep their selector, but take a buffer and a percent.
        assert_eq!(
            field(input(Some(LocationsField::Named("all".into())), None, None).validate(ONLINE)),
            "locations"
        );
        let online = input(None, Some(2), Some(50))
            .validate(ONLINE)
            .expect("valid");
        assert_eq!(
            (online.selector, online.buffer_units, online.max_percent),
            (Selector::ShipFrom, 2, 50)
        );
        assert!(SkuOverride {
            max_percent: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    proptest! {
        #[test]
        fn pool_is_between_zero_and_available(a in any::<i64>(), b in any::<i64>(), p in any::<i64>()) {
            let r = pool_available(a, t(b, p));
            prop_assert!(r >= 0);
            prop_assert!(r <= a.max(0));
        }

        #[test]
        fn pool_grows_with_available(a in 0i64..i64::MAX, d in 0i64..1_000_000, b in 0i64..1_000_000, p in 1i64..=100) {
            let bigger = a.saturating_add(d);
            prop_assert!(pool_available(a, t(b, p)) <= pool_available(bigger, t(b, p)));
        }

        #[test]
        fn no_buffer_and_full_percent_is_identity(a in 0i64..=i64::MAX) {
            prop_assert_eq!(pool_available(a, Terms::IDENTITY), a);
        }

        #[test]
        fn disabled_sells_nothing(a in any::<i64>(), b in any::<i64>(), p in any::<i64>()) {
            let off = Terms { buffer_units: b, max_percent: p, enabled: false };
            prop_assert_eq!(pool_available(a, off), 0);
        }

        #[test]
        fn pool_matches_the_formula_on_small_values(a in 0i64..100_000, b in 0i64..100_000, p in 1i64..=100) {
            let expected = (a - b).min(a * p / 100).max(0);
            prop_assert_eq!(pool_available(a, t(b, p)), expected);
        }
    }
}
