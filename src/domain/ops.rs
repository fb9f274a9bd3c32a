//! The ops view's traffic lights: a measure against its amber and red thresholds, and a
//! location's overall light, the worst of its measures. Unknown measures (no movement yet, the
//! dead-letter count not read in time) are shown as unknown, never as green.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    Green,
    /// The measure could not be taken: not good news, not an alarm either.
    Unknown,
    Amber,
    Red,
}

/// Amber at or above `amber`, red at or above `red`. A red threshold below the amber one
/// wins: a misconfiguration shows more red, never less.
pub fn light<T: PartialOrd + Copy>(value: Option<T>, amber: T, red: T) -> Light {
    match value {
        None => Light::Unknown,
        Some(v) if v >= red => Light::Red,
        Some(v) if v >= amber => Light::Amber,
        Some(_) => Light::Green,
    }
}

/// The worst of several lights (green when there are none).
pub fn worst(lights: impl IntoIterator<Item = Light>) -> Light {
    lights.into_iter().max().unwrap_or(Light::Green)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thresholds_are_inclusive() {
        assert_eq!(light(Some(899), 900, 3600), Light::Green);
        assert_eq!(light(Some(900), 900, 3600), Light::Amber);
        assert_eq!(light(Some(3600), 900, 3600), Light::Red);
        assert_eq!(light(None::<i64>, 900, 3600), Light::Unknown);
        assert_eq!(light(Some(4.9), 5.0, 60.0), Light::Green);
        // Red below amber: red wins.
        assert_eq!(light(Some(10), 100, 5), Light::Red);
    }

    #[test]
    fn the_worst_light_wins() {
        assert_eq!(worst([Light::Green, Light::Red, Light::Amber]), Light::Red);
        assert_eq!(worst([Light::Green, Light::Unknown]), Light::Unknown);
        assert_eq!(worst([Light::Unknown, Light::Amber]), Light::Amber);
        assert_eq!(worst([]), Light::Green);
    }

    proptest! {
        /// A bigger value never gets a better light.
        #[test]
        fn lights_are_monotonic(a in 0i64..10_000, b in 0i64..10_000, amber in 0i64..5_000, red in 0i64..10_000) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(light(Some(lo), amber, red) <= light(Some(hi), amber, red));
        }
    }
}
