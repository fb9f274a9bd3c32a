//! The shape of a retail day: when each kind of traffic happens, in local minutes after
//! midnight (0..1440). Stores trade 10:00-22:00 with a lunch and an evening peak; the e-shop
//! never closes and peaks in the evening; goods arrive and are counted before opening.

/// Minutes in a day.
pub const DAY: u32 = 1440;

/// What one planned request is, for the mix and for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Traffic {
    PosSale,
    Return,
    Receipt,
    Transfer,
    Count,
    Read,
    Checkout,
    Bopis,
    Delivery,
}

impl Traffic {
    pub const ALL: [Traffic; 9] = [
        Traffic::PosSale,
        Traffic::Return,
        Traffic::Receipt,
        Traffic::Transfer,
        Traffic::Count,
        Traffic::Read,
        Traffic::Checkout,
        Traffic::Bopis,
        Traffic::Delivery,
    ];

    /// Share of all planned requests over a whole day.
    pub fn share(self) -> f64 {
        match self {
            Traffic::Read => 0.34,
            Traffic::PosSale => 0.30,
            Traffic::Checkout => 0.08,
            Traffic::Bopis => 0.04,
            Traffic::Delivery => 0.04,
            Traffic::Return => 0.04,
            Traffic::Receipt => 0.04,
            Traffic::Transfer => 0.05,
            Traffic::Count => 0.07,
        }
    }

    /// Relative intensity at local minute `m` (where the traffic happens: a store for POS,
    /// returns and counts; the network's clock for the rest).
    pub fn intensity(self, m: u32) -> f64 {
        let m = m % DAY;
        match self {
            Traffic::PosSale => store_curve(m),
            Traffic::Return => open(m) * (1.0 + bump(m, 17 * 60, 120.0)),
            Traffic::Receipt => window(m, 6 * 60, 14 * 60),
            Traffic::Transfer => window(m, 7 * 60, 18 * 60),
            // Cycle counts when the shop floor is quiet: before opening and after closing.
            Traffic::Count => window(m, 8 * 60, 10 * 60) + window(m, 22 * 60, 23 * 60),
            Traffic::Read => online_curve(m) + store_curve(m) * 0.5,
            Traffic::Checkout | Traffic::Delivery => online_curve(m),
            Traffic::Bopis => online_curve(m) * window(m, 8 * 60, 21 * 60),
        }
    }
}

/// 1 while a store is open (10:00 to 22:00), else 0.
pub fn open(m: u32) -> f64 {
    window(m, 10 * 60, 22 * 60)
}

/// Store traffic: a base while open, a lunch peak at 12:30 and a larger evening peak at 19:00.
pub fn store_curve(m: u32) -> f64 {
    open(m) * (1.0 + 2.5 * bump(m, 12 * 60 + 30, 45.0) + 3.0 * bump(m, 19 * 60, 75.0))
}

/// The e-shop: a trickle at night, a day base, a lunch bump and an evening peak at 21:00.
pub fn online_curve(m: u32) -> f64 {
    0.15 + 0.6 * window(m, 8 * 60, 24 * 60)
        + 1.0 * bump(m, 12 * 60 + 30, 45.0)
        + 2.5 * bump(m, 21 * 60, 80.0)
}

fn window(m: u32, from: u32, to: u32) -> f64 {
    if (from..to).contains(&m) {
        1.0
    } else {
        0.0
    }
}

fn bump(m: u32, centre: u32, width: f64) -> f64 {
    let d = (m as f64 - centre as f64) / width;
    (-0.5 * d * d).exp()
}

/// Cumulative intensity of `traffic` over the simulated minutes `start..start+len` (each
/// shifted by `shift` minutes into local time), one entry per minute.
pub fn cumulative(traffic: Traffic, start: u32, len: u32, shift: i32) -> Vec<f64> {
    let mut acc = 0.0;
    (0..len)
        .map(|i| {
            acc += traffic.intensity(local_minute(start + i, shift));
            acc
        })
        .collect()
}

/// Network minute plus a zone shift, wrapped into the day.
pub fn local_minute(minute: u32, shift: i32) -> u32 {
    (minute as i64 + shift as i64).rem_euclid(DAY as i64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_one() {
        let total: f64 = Traffic::ALL.iter().map(|t| t.share()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn stores_are_closed_at_night_and_peak_at_lunch_and_evening() {
        assert_eq!(store_curve(3 * 60), 0.0);
        assert_eq!(store_curve(23 * 60), 0.0);
        let morning = store_curve(10 * 60 + 30);
        let lunch = store_curve(12 * 60 + 30);
        let afternoon = store_curve(15 * 60 + 30);
        let evening = store_curve(19 * 60);
        assert!(lunch > 2.0 * morning && lunch > 2.0 * afternoon);
        assert!(evening > lunch);
        assert_eq!(Traffic::PosSale.intensity(9 * 60), 0.0);
    }

    #[test]
    fn the_eshop_never_closes_and_peaks_in_the_evening() {
        assert!(online_curve(3 * 60) > 0.0);
        assert!(online_curve(21 * 60) > 2.0 * online_curve(16 * 60));
    }

    #[test]
    fn receipts_and_counts_happen_outside_the_rush() {
        assert!(Traffic::Receipt.intensity(7 * 60) > 0.0);
        assert_eq!(Traffic::Receipt.intensity(19 * 60), 0.0);
        assert!(Traffic::Count.intensity(9 * 60) > 0.0);
        assert_eq!(Traffic::Count.intensity(19 * 60), 0.0);
    }

    #[test]
    fn a_zone_shift_moves_the_curve() {
        // A store two hours ahead opens at network 08:00.
        assert_eq!(local_minute(8 * 60, 120), 10 * 60);
        assert_eq!(local_minute(30, -60), 23 * 60 + 30);
        let shifted = cumulative(Traffic::PosSale, 8 * 60, 60, 120);
        assert!(*shifted.last().expect("minutes") > 0.0);
        let unshifted = cumulative(Traffic::PosSale, 8 * 60, 60, 0);
        assert_eq!(*unshifted.last().expect("minutes"), 0.0);
    }
}
