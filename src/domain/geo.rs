//! Distances on the Earth's surface.

/// Mean Earth radius (IUGG), in km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km (haversine, mean Earth radius 6371.0088 km).
///
/// Coordinates are in degrees. Non-finite input gives a non-finite (NaN) result.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let d_phi = phi2 - phi1;
    let d_lambda = (lon2 - lon1).to_radians();
    let h = (d_phi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (d_lambda / 2.0).sin().powi(2);
    // Rounding can push h a hair outside [0, 1] for (near-)antipodal points.
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Reference values computed independently with the vector form
    // d = R * atan2(|a x b|, a . b) of unit vectors a, b (Python, f64).
    const TAIPEI: (f64, f64) = (25.05306, 121.52639);
    const KAOHSIUNG: (f64, f64) = (22.61626, 120.31333);
    const TAICHUNG: (f64, f64) = (24.13689, 120.68500);

    fn d(a: (f64, f64), b: (f64, f64)) -> f64 {
        haversine_km(a.0, a.1, b.0, b.1)
    }

    #[test]
    fn taiwan_city_distances() {
        assert!((d(TAIPEI, KAOHSIUNG) - 297.723).abs() < 0.5);
        assert!((d(TAIPEI, TAICHUNG) - 132.721).abs() < 0.5);
        assert!((d(KAOHSIUNG, TAICHUNG) - 173.289).abs() < 0.5);
    }

    #[test]
    fn zero_half_circumference_and_nan() {
        assert_eq!(d(TAIPEI, TAIPEI), 0.0);
        let half = std::f64::consts::PI * EARTH_RADIUS_KM;
        assert!((haversine_km(0.0, 0.0, 0.0, 180.0) - half).abs() < 1e-6);
        assert!((haversine_km(90.0, 0.0, -90.0, 0.0) - half).abs() < 1e-6);
        assert!(haversine_km(f64::NAN, 0.0, 0.0, 0.0).is_nan());
    }

    proptest! {
        #[test]
        fn symmetric_nonnegative_and_bounded(
            lat1 in -90.0f64..90.0, lon1 in -180.0f64..180.0,
            lat2 in -90.0f64..90.0, lon2 in -180.0f64..180.0,
        ) {
            let a = haversine_km(lat1, lon1, lat2, lon2);
            let b = haversine_km(lat2, lon2, lat1, lon1);
            prop_assert!(a >= 0.0);
            prop_assert!((a - b).abs() < 1e-9);
            prop_assert!(a <= std::f64::consts::PI * EARTH_RADIUS_KM + 1e-6);
        }
    }
}
