//! Finding the poison in a batch: when the database refuses a set of movements for its data,
//! the set is split in halves and each half tried on its own, down to the single movement it
//! refuses. Everything else is applied. With one poison element among n this costs about
//! 2·log2(n) transactions, and nothing when the batch is clean.

use std::future::Future;

/// Errors of data (class 22) or integrity (23) will fail again however often they are tried:
/// they mark a poison movement, not an outage.
pub fn is_poison(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("22") || (c.starts_with("23") && c != "23505")),
        sqlx::Error::Encode(_) => true,
        _ => false,
    }
}

/// The outcome of applying a set with poison isolated.
#[derive(Debug)]
pub struct Isolated<R, E> {
    /// What each committed part returned, with the offset of the part in the items.
    pub applied: Vec<(usize, R)>,
    /// The single items refused, by offset, with the error that refused them.
    pub poisoned: Vec<(usize, E)>,
}

/// Applies `items` with `apply`, one transaction per call. A set refused with an error
/// `is_poison` says will fail again whatever the retry (a data error) is tried once more,
/// then bisected. Any other error (an outage) ends the run: the caller hands the whole batch
/// back, and parts already committed are recognised as duplicates on redelivery.
///
/// Parts are tried in order (first half first), so movements apply in their batch order.
pub async fn isolate<'a, T, R, E, F, Fut>(
    items: &'a [T],
    mut apply: F,
    is_poison: impl Fn(&E) -> bool,
) -> Result<Isolated<R, E>, E>
where
    F: FnMut(&'a [T]) -> Fut,
    Fut: Future<Output = Result<R, E>>,
{
    let mut out = Isolated {
        applied: Vec::new(),
        poisoned: Vec::new(),
    };
    // A stack of half-open ranges; the later half is pushed first so the earlier runs first.
    let mut todo = vec![(0, items.len())];
    let mut retried = false;
    while let Some((lo, hi)) = todo.pop() {
        if lo >= hi {
            continue;
        }
        match apply(&items[lo..hi]).await {
            Ok(r) => out.applied.push((lo, r)),
            Err(e) if is_poison(&e) => {
                if hi - lo == 1 {
                    out.poisoned.push((lo, e));
                } else if !retried && (lo, hi) == (0, items.len()) {
                    // One retry of the whole: a data error raised by a concurrent change
                    // (a constraint another writer's row tripped) may not repeat.
                    retried = true;
                    todo.push((lo, hi));
                } else {
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi));
                    todo.push((lo, mid));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::RefCell;

    #[derive(Debug, PartialEq)]
    enum Fail {
        Poison,
        Outage,
    }

    fn run(
        items: &[u32],
        poison: &[u32],
        outage_after: Option<usize>,
    ) -> (Result<Isolated<Vec<u32>, Fail>, Fail>, usize) {
        let calls = RefCell::new(0usize);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let result = rt.block_on(isolate(
            items,
            |part: &[u32]| {
                *calls.borrow_mut() += 1;
                let n = *calls.borrow();
                let part = part.to_vec();
                async move {
                    if outage_after.is_some_and(|k| n > k) {
                        Err(Fail::Outage)
                    } else if part.iter().any(|x| poison.contains(x)) {
                        Err(Fail::Poison)
                    } else {
                        Ok(part)
                    }
                }
            },
            |e| *e == Fail::Poison,
        ));
        (result, calls.into_inner())
    }

    #[test]
    fn a_clean_batch_is_one_call() {
        let (r, calls) = run(&[1, 2, 3], &[], None);
        let r = r.expect("applied");
        assert_eq!(calls, 1);
        assert_eq!(r.applied, vec![(0, vec![1, 2, 3])]);
        assert!(r.poisoned.is_empty());
    }

    #[test]
    fn the_poison_alone_is_refused_and_the_rest_applied_in_order() {
        let items: Vec<u32> = (0..16).collect();
        let (r, calls) = run(&items, &[11], None);
        let r = r.expect("applied");
        assert_eq!(
            r.poisoned.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![11]
        );
        let applied: Vec<u32> = r.applied.into_iter().flat_map(|(_, p)| p).collect();
        let expected: Vec<u32> = (0..16).filter(|&x| x != 11).collect();
        assert_eq!(applied, expected, "in batch order");
        // 1 + retry, then two halves per level of 4 levels.
        assert!(calls <= 2 + 2 * 4, "{calls} calls");
    }

    #[test]
    fn an_outage_ends_the_run() {
        let items: Vec<u32> = (0..8).collect();
        let (r, _) = run(&items, &[3], Some(3));
        assert_eq!(r.expect_err("outage"), Fail::Outage);
    }

    proptest! {
        /// Whatever is poisoned, exactly the poisoned items are refused, each other item is
        /// applied exactly once, in order.
        #[test]
        fn exactly_the_poison_is_refused(
            n in 1usize..64,
            poison in prop::collection::vec(0u32..64, 0..6),
        ) {
            let items: Vec<u32> = (0..n as u32).collect();
            let (r, _) = run(&items, &poison, None);
            let r = r.expect("no outage");
            let refused: Vec<u32> = r.poisoned.iter().map(|(i, _)| items[*i]).collect();
            let expected_refused: Vec<u32> =
                items.iter().copied().filter(|x| poison.contains(x)).collect();
            prop_assert_eq!(refused, expected_refused);
            let applied: Vec<u32> = r.applied.iter().flat_map(|(_, p)| p.clone()).collect();
            let expected: Vec<u32> = items.iter().copied().filter(|x| !poison.contains(x)).collect();
            prop_assert_eq!(applied, expected);
            for (offset, part) in &r.applied {
                prop_assert_eq!(&items[*offset..*offset + part.len()], part.as_slice());
            }
        }
    }
}
