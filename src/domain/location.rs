//! Locations: stores, warehouses and the e-shop, and the rules for creating or replacing one.

use serde::{Deserialize, Serialize};

use super::ids::is_valid_location_id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocationKind {
    Store,
    Warehouse,
    Online,
}

impl LocationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LocationKind::Store => "store",
            LocationKind::Warehouse => "warehouse",
            LocationKind::Online => "online",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "store" => Some(LocationKind::Store),
            "warehouse" => Some(LocationKind::Warehouse),
            "online" => Some(LocationKind::Online),
            _ => None,
        }
    }
}

/// A location as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Location {
    pub location_id: String,
    pub name: String,
    pub kind: LocationKind,
    pub lat: f64,
    pub lon: f64,
    pub pickup: bool,
    pub ship_from: bool,
    pub safety_stock: i64,
    pub daily_order_capacity: Option<i64>,
    /// IANA time zone; "today" for daily capacity is counted in it.
    pub timezone: String,
    /// Low-stock alert threshold here (a SKU's own wins; null: the daemon's default).
    pub low_stock_threshold: Option<i64>,
}

/// The body of `PUT /v1/locations/{id}` (and a row of `import locations`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationInput {
    /// 1-200 characters after trimming surrounding whitespace (stored trimmed).
    pub name: String,
    pub kind: LocationKind,
    #[schema(minimum = -90, maximum = 90)]
    pub lat: f64,
    #[schema(minimum = -180, maximum = 180)]
    pub lon: f64,
    /// Customers may pick up orders here (stores only are considered for pickup).
    #[serde(default)]
    pub pickup: bool,
    /// Ships to customers (warehouses and the e-shop ship regardless).
    #[serde(default)]
    pub ship_from: bool,
    /// Units kept back from `available` at this location (0 to 1000000000).
    #[serde(default)]
    pub safety_stock: i64,
    /// Orders routed here per local day; null means unlimited.
    #[serde(default)]
    pub daily_order_capacity: Option<i64>,
    /// IANA time zone known to PostgreSQL (e.g. `Asia/Taipei`); "today" for capacity is
    /// counted in it. Null means `UTC`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Low-stock alert threshold here (a SKU's own wins); null means the daemon's default.
    #[serde(default)]
    pub low_stock_threshold: Option<i64>,
}

/// One invalid field: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: &'static str,
    pub problem: String,
}

fn field(field: &'static str, problem: impl Into<String>) -> FieldError {
    FieldError {
        field,
        problem: problem.into(),
    }
}

pub const DEFAULT_TIMEZONE: &str = "UTC";

impl LocationInput {
    /// Checks every field and reports all problems at once, so a client fixes them in one go.
    pub fn validate(self, location_id: &str) -> Result<Location, Vec<FieldError>> {
        let mut errors = Vec::new();
        if !is_valid_location_id(location_id) {
            errors.push(field("location_id", "must match [A-Za-z0-9_-]{1,64}"));
        }
        let name = self.name.trim();
        // Control characters too: PostgreSQL refuses a NUL in text, which would be a 500.
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            errors.push(field("name", "must be 1-200 printable characters"));
        }
        if !(-90.0..=90.0).contains(&self.lat) || !self.lat.is_finite() {
            errors.push(field("lat", "must be between -90 and 90"));
        }
        if !(-180.0..=180.0).contains(&self.lon) || !self.lon.is_finite() {
            errors.push(field("lon", "must be between -180 and 180"));
        }
        if !(0..=1_000_000_000).contains(&self.safety_stock) {
            errors.push(field("safety_stock", "must be between 0 and 1000000000"));
        }
        if let Some(c) = self.daily_order_capacity {
            if !(0..=1_000_000_000).contains(&c) {
                errors.push(field(
                    "daily_order_capacity",
                    "must be null or between 0 and 1000000000",
                ));
            }
        }
        if self
            .low_stock_threshold
            .is_some_and(|t| !(0..=1_000_000_000).contains(&t))
        {
            errors.push(field(
                "low_stock_threshold",
                "must be null or between 0 and 1000000000",
            ));
        }
        let timezone = self.timezone.unwrap_or_else(|| DEFAULT_TIMEZONE.to_owned());
        if !is_plausible_timezone(&timezone) {
            errors.push(field(
                "timezone",
                "must be an IANA time zone name such as Asia/Taipei",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Location {
            location_id: location_id.to_owned(),
            name: name.to_owned(),
            kind: self.kind,
            lat: self.lat,
            lon: self.lon,
            pickup: self.pickup,
            ship_from: self.ship_from,
            safety_stock: self.safety_stock,
            daily_order_capacity: self.daily_order_capacity,
            timezone,
            low_stock_threshold: self.low_stock_threshold,
        })
    }
}

/// Shape check only; PostgreSQL's own zone table has the final word when the zone is used.
fn is_plausible_timezone(tz: &str) -> bool {
    (1..=64).contains(&tz.len())
        && tz
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_+-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> LocationInput {
        LocationInput {
            name: "Taipei Store".into(),
            kind: LocationKind::Store,
            lat: 25.05306,
            lon: 121.52639,
            pickup: true,
            ship_from: false,
            safety_stock: 1,
            daily_order_capacity: None,
            timezone: Some("Asia/Taipei".into()),
            low_stock_threshold: None,
        }
    }

    #[test]
    fn valid_input_becomes_a_location() {
        let l = input().validate("TW001").expect("valid");
        assert_eq!(l.timezone, "Asia/Taipei");
        assert_eq!(l.safety_stock, 1);
    }

    #[test]
    fn every_problem_is_reported() {
        let mut i = input();
        i.name = " ".into();
        i.lat = 91.0;
        i.lon = f64::NAN;
        i.safety_stock = -1;
        i.daily_order_capacity = Some(-2);
        i.timezone = Some("not a zone".into());
        let errors = i.validate("bad id").expect_err("invalid");
        let fields: Vec<_> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "location_id",
                "name",
                "lat",
                "lon",
                "safety_stock",
                "daily_order_capacity",
                "timezone"
            ]
        );
    }

    #[test]
    fn a_name_with_a_control_character_is_refused() {
        for name in ["Taipei\u{0}Store", "Taipei\nStore"] {
            let mut i = input();
            i.name = name.into();
            let errors = i.validate("TW001").expect_err("invalid");
            assert_eq!(errors[0].field, "name");
        }
    }

    #[test]
    fn timezone_defaults_to_utc() {
        let mut i = input();
        i.timezone = None;
        assert_eq!(i.validate("X").expect("valid").timezone, "UTC");
    }
}
