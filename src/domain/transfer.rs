//! Transfers between locations: what left one location and has not arrived at the other is in
//! transit to the destination. The two movements may arrive in either order.

/// One SKU of one transfer, as the ledger knows it so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TransferLine {
    pub from_location_id: Option<String>,
    pub to_location_id: Option<String>,
    pub shipped: i64,
    pub received: i64,
    /// The level whose `in_transit` currently counts this line, and how much.
    pub accounted_to: Option<String>,
    pub accounted: i64,
}

impl TransferLine {
    /// Shipped and not yet received.
    pub fn open(&self) -> i64 {
        (self.shipped - self.received).max(0)
    }

    /// Moves the accounting to match the line: returns the `in_transit` changes to make, as
    /// (location, delta). `known` says whether a location has a level (is registered).
    pub fn settle(&mut self, known: impl Fn(&str) -> bool) -> Vec<(String, i64)> {
        let mut changes = Vec::new();
        let target = self
            .to_location_id
            .clone()
            .filter(|d| known(d))
            .filter(|_| self.open() > 0);
        let amount = if target.is_some() { self.open() } else { 0 };
        if self.accounted_to == target && self.accounted == amount {
            return changes;
        }
        if let Some(old) = self.accounted_to.take() {
            if self.accounted != 0 {
                changes.push((old, -self.accounted));
            }
        }
        if let Some(t) = &target {
            changes.push((t.clone(), amount));
        }
        self.accounted_to = target;
        self.accounted = amount;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line() -> TransferLine {
        TransferLine::default()
    }

    #[test]
    fn out_then_in() {
        let mut l = line();
        l.from_location_id = Some("WH".into());
        l.to_location_id = Some("TW001".into());
        l.shipped = 5;
        assert_eq!(l.settle(|_| true), vec![("TW001".into(), 5)]);
        l.received = 5;
        assert_eq!(l.settle(|_| true), vec![("TW001".into(), -5)]);
        assert_eq!(l.accounted_to, None);
    }

    #[test]
    fn in_before_out_never_shows_transit() {
        let mut l = line();
        l.to_location_id = Some("TW001".into());
        l.received = 5;
        assert!(l.settle(|_| true).is_empty());
        l.shipped = 5;
        assert!(l.settle(|_| true).is_empty());
    }

    #[test]
    fn partial_receipt_and_unknown_destination() {
        let mut l = line();
        l.to_location_id = Some("TW001".into());
        l.shipped = 5;
        l.settle(|_| true);
        l.received = 2;
        assert_eq!(
            l.settle(|_| true),
            vec![("TW001".into(), -5), ("TW001".into(), 3)]
        );
        let mut u = line();
        u.to_location_id = Some("NOWHERE".into());
        u.shipped = 4;
        assert!(u.settle(|_| false).is_empty(), "no level to count it at");
    }

    proptest! {
        /// Whatever the order of shipments and receipts, the accounted amount equals what is
        /// open, and the changes returned sum to it.
        #[test]
        fn accounting_follows_the_open_quantity(steps in prop::collection::vec((any::<bool>(), 1i64..10), 0..20)) {
            let mut l = line();
            l.to_location_id = Some("D".into());
            let mut total = 0;
            for (ship, q) in steps {
                if ship { l.shipped += q } else { l.received += q }
                total += l.settle(|_| true).iter().map(|(_, d)| d).sum::<i64>();
                prop_assert_eq!(l.accounted, l.open());
                prop_assert_eq!(total, l.open());
            }
        }
    }
}
