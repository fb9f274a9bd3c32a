//! Where a reader of the insert-only outbox is (the relay, the cache sync), without a mark on
//! any outbox row.
//!
//! Outbox ids come from a sequence, so they are allocated in insert order but committed in
//! any order: a reader that has seen id 500 may not yet see id 480, whose transaction is still
//! open (or was rolled back, and 480 never appears). So a reader keeps, besides `seen_to` (the
//! highest id it handled), the *gaps* below it: ids it has not seen. Each read fetches the
//! rows above `seen_to` and the rows inside the gaps; a gap row that appears is handled then.
//!
//! A gap is closed for good once every transaction that could fill it has ended. Every id
//! below a visible row was allocated before the snapshot that shows the row, by a transaction
//! that already had its id (every writer changes a level before it writes its events, and the
//! insert asks for the id first), so that transaction's id was assigned before the snapshot.
//! The read records as the gap's `xmax` a transaction id taken after its snapshot (the
//! reader's own, see `db::outbox::unseen`; not the snapshot's `xmax`, which is only the latest
//! *completed* id + 1 and can be below an open transaction's id). A later snapshot whose
//! `xmin` has reached that bound proves every transaction that could fill the gap ended: a
//! gap row it does not show never will appear. `done_to` (every id up to it handled or proven
//! empty) is what the cleanup may delete up to.
//!
//! Order per SKU needs no gap logic: every writer inserts its events while it holds the row
//! lock of the level (or of the SKU's network state) they describe, so of two events of one
//! SKU the lower id committed first, and a snapshot showing the later shows the earlier.

use std::collections::BTreeMap;

/// The transaction bounds of the snapshot a read used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// Every transaction id below it has ended (`pg_snapshot_xmin`).
    pub xmin: i64,
    /// Every transaction id assigned when the snapshot was taken is below it (a transaction
    /// id taken after the snapshot; not `pg_snapshot_xmax`, see `db::outbox::unseen`).
    pub xmax: i64,
}

/// A reader's position in the outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Highest id handled.
    pub seen_to: i64,
    /// Ids below `seen_to` not seen yet: first id → (last id, `xmax` of the snapshot that
    /// found the range missing).
    pub gaps: BTreeMap<i64, (i64, i64)>,
}

impl Cursor {
    pub fn at(seen_to: i64) -> Self {
        Cursor {
            seen_to,
            gaps: BTreeMap::new(),
        }
    }

    /// Every id up to this one is handled or will never appear.
    pub fn done_to(&self) -> i64 {
        self.gaps
            .keys()
            .next()
            .map_or(self.seen_to, |lo| lo.saturating_sub(1))
    }

    /// The gaps as three parallel arrays (first ids, last ids, xmax), for a query or a row.
    pub fn gap_arrays(&self) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
        let mut lo = Vec::with_capacity(self.gaps.len());
        let mut hi = Vec::with_capacity(self.gaps.len());
        let mut xmax = Vec::with_capacity(self.gaps.len());
        for (&l, &(h, x)) in &self.gaps {
            lo.push(l);
            hi.push(h);
            xmax.push(x);
        }
        (lo, hi, xmax)
    }

    /// The cursor as stored; ranges of unequal length are cut to the shortest.
    pub fn from_arrays(seen_to: i64, lo: &[i64], hi: &[i64], xmax: &[i64]) -> Self {
        let gaps = lo
            .iter()
            .zip(hi)
            .zip(xmax)
            .filter(|((l, h), _)| l <= h)
            .map(|((&l, &h), &x)| (l, (h, x)))
            .collect();
        Cursor { seen_to, gaps }
    }

    /// Moves past what a read handled. `handled` are the ids handled, ascending: rows of the
    /// gaps and rows above `seen_to`, as a read ordered by id returned them. `complete` says
    /// whether they are every such row the snapshot showed (a read cut by its limit, or
    /// stopped at a failure, is not): then ids past the last one are left for the next read.
    pub fn advance(&mut self, horizon: Horizon, handled: &[i64], complete: bool) {
        let covered_to = if complete {
            i64::MAX
        } else {
            handled.last().copied().unwrap_or(i64::MIN)
        };
        // Gap rows that appeared are handled now.
        let seen_to = self.seen_to;
        for &id in handled.iter().filter(|&&id| id <= seen_to) {
            self.fill(id);
        }
        // Ids above `seen_to` skipped by the read are gaps, found by this snapshot.
        let mut next = seen_to.saturating_add(1);
        for &id in handled.iter().filter(|&&id| id > seen_to) {
            if id > next {
                self.gaps.insert(next, (id - 1, horizon.xmax));
            }
            next = id.saturating_add(1);
            self.seen_to = id;
        }
        // A gap the read covered, and that no open transaction can fill any more, is empty.
        self.gaps
            .retain(|&lo, &mut (_, xmax)| lo > covered_to || horizon.xmin < xmax);
    }

    /// Removes one id from the gaps.
    fn fill(&mut self, id: i64) {
        let Some((&lo, &(hi, xmax))) = self.gaps.range(..=id).next_back() else {
            return;
        };
        if id > hi {
            return;
        }
        self.gaps.remove(&lo);
        if lo < id {
            self.gaps.insert(lo, (id - 1, xmax));
        }
        if id < hi {
            self.gaps.insert(id + 1, (hi, xmax));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPEN: Horizon = Horizon { xmin: 10, xmax: 20 };

    #[test]
    fn a_contiguous_read_moves_both_ends() {
        let mut c = Cursor::at(0);
        c.advance(OPEN, &[1, 2, 3], true);
        assert_eq!((c.seen_to, c.done_to()), (3, 3));
        assert!(c.gaps.is_empty());
    }

    #[test]
    fn a_missing_id_holds_done_to_until_it_appears() {
        let mut c = Cursor::at(0);
        c.advance(OPEN, &[1, 2, 4, 5], true);
        assert_eq!((c.seen_to, c.done_to()), (5, 2));
        c.advance(OPEN, &[3, 6], true);
        assert_eq!((c.seen_to, c.done_to()), (6, 6));
    }

    #[test]
    fn a_gap_is_dropped_only_once_every_transaction_open_at_its_discovery_ended() {
        let mut c = Cursor::at(0);
        c.advance(OPEN, &[1, 5], true);
        assert_eq!(c.done_to(), 1);
        // xmin 19 < xmax 20: a transaction that took one of 2..=4 may still be open.
        c.advance(Horizon { xmin: 19, xmax: 30 }, &[], true);
        assert_eq!(c.done_to(), 1);
        c.advance(Horizon { xmin: 20, xmax: 30 }, &[], true);
        assert_eq!(c.done_to(), 5);
    }

    #[test]
    fn an_incomplete_read_proves_nothing_past_its_last_row() {
        let mut c = Cursor::at(0);
        c.advance(OPEN, &[1, 3, 9], true);
        // A read cut after id 3 of the gaps says nothing of 4..=8.
        c.advance(Horizon { xmin: 50, xmax: 60 }, &[2], false);
        assert_eq!(c.done_to(), 3, "{c:?}");
        assert_eq!(c.gaps.keys().copied().collect::<Vec<_>>(), vec![4]);
        c.advance(Horizon { xmin: 50, xmax: 60 }, &[], true);
        assert_eq!(c.done_to(), 9);
    }

    #[test]
    fn the_stored_form_round_trips() {
        let mut c = Cursor::at(0);
        c.advance(OPEN, &[1, 3, 4, 8], true);
        let (lo, hi, x) = c.gap_arrays();
        assert_eq!(Cursor::from_arrays(c.seen_to, &lo, &hi, &x), c);
    }

    proptest! {
        /// Whatever the commit order: every id is handled exactly once, nothing is declared
        /// empty while its transaction may still commit it, and once all have ended done_to
        /// reaches the last id.
        #[test]
        fn every_committed_id_is_handled_once(
            commits in prop::collection::vec((1i64..60, any::<bool>()), 1..60),
            limit in 1usize..8,
        ) {
            // Ids 1..=n, each by its own transaction (xid = id + 100), committed in the order
            // given (first occurrence), or rolled back.
            let mut order: Vec<(i64, bool)> = Vec::new();
            for (id, ok) in commits {
                if !order.iter().any(|(i, _)| *i == id) {
                    order.push((id, ok));
                }
            }
            let n = order.iter().map(|(i, _)| *i).max().unwrap_or(0);
            // Ids never named were taken by transactions that roll back last.
            for i in 1..=n {
                if !order.iter().any(|(o, _)| *o == i) {
                    order.push((i, false));
                }
            }
            let mut ended: Vec<(i64, bool)> = Vec::new();
            let mut c = Cursor::at(0);
            let mut handled: Vec<i64> = Vec::new();
            for step in 0..=order.len() + 200 {
                if step < order.len() {
                    ended.push(order[step]);
                }
                let open: Vec<i64> = (1..=n)
                    .filter(|i| !ended.iter().any(|(e, _)| e == i))
                    .collect();
                // Ids of open transactions are allocated too (all ids are allocated up front).
                let horizon = Horizon {
                    xmin: open.iter().map(|i| i + 100).min().unwrap_or(n + 101),
                    xmax: n + 101,
                };
                let visible: Vec<i64> = ended
                    .iter()
                    .filter(|(_, ok)| *ok)
                    .map(|(i, _)| *i)
                    .filter(|i| *i > c.seen_to || c.gaps.range(..=*i).next_back().is_some_and(|(_, (hi, _))| i <= hi))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let read: Vec<i64> = visible.iter().copied().take(limit).collect();
                let complete = read.len() == visible.len();
                c.advance(horizon, &read, complete);
                handled.extend(read);
                // Nothing open is ever behind done_to.
                for i in &open {
                    prop_assert!(*i > c.done_to(), "open {} behind done_to {}", i, c.done_to());
                }
            }
            let mut expected: Vec<i64> = order.iter().filter(|(_, ok)| *ok).map(|(i, _)| *i).collect();
            expected.sort_unstable();
            let mut got = handled.clone();
            got.sort_unstable();
            prop_assert_eq!(got, expected);
            prop_assert!(c.done_to() >= order.iter().filter(|(_, ok)| *ok).map(|(i, _)| *i).max().unwrap_or(0));
        }
    }
}
