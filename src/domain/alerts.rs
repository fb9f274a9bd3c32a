//! Stock alerts: a level (or the network total) is `out`, `low` or `ok`; an alert fires when
//! the state changes, so it fires once per crossing, not on every movement.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StockState {
    Out,
    Low,
    Ok,
}

impl StockState {
    pub fn as_str(self) -> &'static str {
        match self {
            StockState::Out => "out",
            StockState::Low => "low",
            StockState::Ok => "ok",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "out" => Some(StockState::Out),
            "low" => Some(StockState::Low),
            "ok" => Some(StockState::Ok),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    OutOfStock,
    BackInStock,
    LowStock,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::OutOfStock => "out_of_stock",
            AlertKind::BackInStock => "back_in_stock",
            AlertKind::LowStock => "low_stock",
        }
    }
}

/// Out at zero, low at or below the threshold, ok above it.
pub fn classify(available: i64, threshold: i64) -> StockState {
    if available <= 0 {
        StockState::Out
    } else if available <= threshold {
        StockState::Low
    } else {
        StockState::Ok
    }
}

/// The alert a change of state calls for. Leaving `out` is news whatever the new level;
/// recovering from `low` to `ok` is not.
pub fn crossing(before: StockState, after: StockState) -> Option<AlertKind> {
    match (before, after) {
        (b, a) if b == a => None,
        (_, StockState::Out) => Some(AlertKind::OutOfStock),
        (StockState::Out, _) => Some(AlertKind::BackInStock),
        (StockState::Ok, StockState::Low) => Some(AlertKind::LowStock),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use StockState::*;

    #[test]
    fn states_and_crossings() {
        assert_eq!(classify(0, 2), Out);
        assert_eq!(classify(-3, 2), Out);
        assert_eq!(classify(2, 2), Low);
        assert_eq!(classify(3, 2), Ok);
        assert_eq!(classify(1, 0), Ok, "threshold 0: never low");
        assert_eq!(crossing(Ok, Low), Some(AlertKind::LowStock));
        assert_eq!(crossing(Low, Out), Some(AlertKind::OutOfStock));
        assert_eq!(crossing(Ok, Out), Some(AlertKind::OutOfStock));
        assert_eq!(crossing(Out, Low), Some(AlertKind::BackInStock));
        assert_eq!(crossing(Out, Ok), Some(AlertKind::BackInStock));
        assert_eq!(crossing(Low, Ok), None);
        assert_eq!(crossing(Low, Low), None);
    }

    proptest! {
        /// Along any path of levels, alerts alternate sensibly: never two out_of_stock without a
        /// back_in_stock between them, and no alert without a state change.
        #[test]
        fn one_alert_per_crossing(levels in prop::collection::vec(-2i64..8, 1..50), threshold in 0i64..4) {
            let mut state = classify(levels[0], threshold);
            let mut last = None;
            for &l in &levels[1..] {
                let next = classify(l, threshold);
                if let Some(a) = crossing(state, next) {
                    prop_assert_ne!(state, next);
                    if a == AlertKind::OutOfStock {
                        prop_assert_ne!(last, Some(AlertKind::OutOfStock));
                    }
                    if a == AlertKind::BackInStock {
                        prop_assert_eq!(state, Out);
                    }
                    if a != AlertKind::LowStock {
                        last = Some(a);
                    }
                }
                state = next;
            }
        }
    }
}
