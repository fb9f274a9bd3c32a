//! Keyed work queues drained in groups: what group commit (of holds, of routes) is built on.
//!
//! Requests for one key wait in memory while one task per busy key drains them, many per
//! transaction. While a group commits the next one gathers, so the group grows with the load
//! and a lone request goes through at once.
//!
//! A group may hand off before it has finished ([`Handoff`]): once it holds its locks and is
//! about to commit, the next group starts. That one begins its transaction and does its reads
//! while the first waits for its commit's fsync and writes Redis, then queues for the locks
//! behind it. The locks are still taken one group after another and in arrival order (the
//! next group asks for them only once this one holds them), so every decision is made against
//! the committed result of the group before; what overlaps is the work outside the locks.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

/// How long a caller waits for its group's answer. The group's statements are bounded by
/// `statement_timeout` and `lock_timeout`; this bounds the wait in the queue too.
const WAIT: Duration = Duration::from_secs(60);

/// A queued request's answer, or `None` when the drain ended without answering (it cannot,
/// short of a panic) or the queue did not move in time. Either way the request was taken
/// whole or not at all, and a retry with the same id tells which.
pub(crate) async fn answer<A>(rx: oneshot::Receiver<A>) -> Option<A> {
    tokio::time::timeout(WAIT, rx).await.ok()?.ok()
}

pub struct Queues<K, T> {
    /// A key is present while a task drains its queue.
    map: Mutex<HashMap<K, Vec<T>>>,
}

impl<K: Hash + Eq + Clone + Send + 'static, T: Send + 'static> Queues<K, T> {
    pub fn new() -> Self {
        Queues {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, Vec<T>>> {
        // The map is consistent between statements, so a panic elsewhere leaves it usable.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` under `key`, and starts a task draining the key with `run` unless one
    /// runs already. `run` gets at most `max` items at a time, in arrival order, and a
    /// [`Handoff`] to start the next group early.
    pub fn push<F, Fut>(self: &Arc<Self>, key: K, item: T, max: usize, run: F)
    where
        F: Fn(K, Vec<T>, Handoff) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let start = {
            let mut map = self.lock();
            match map.get_mut(&key) {
                Some(q) => {
                    q.push(item);
                    false
                }
                None => {
                    map.insert(key.clone(), vec![item]);
                    true
                }
            }
        };
        if start {
            tokio::spawn(drain(Arc::clone(self), key, max, run));
        }
    }

    /// Puts items back at the head of a key's queue, for its drain's next group. Only a
    /// running group that has not handed off calls it, so the key is present; if not, the
    /// items are dropped and their callers fail instead of waiting.
    pub fn requeue(&self, key: &K, items: Vec<T>) {
        if let Some(q) = self.lock().get_mut(key) {
            q.splice(0..0, items);
        }
    }

    /// The next group of a key, or `None` once its queue is empty (the key is then removed
    /// under the same lock, so a new item starts a new drain).
    fn next(&self, key: &K, max: usize) -> Option<Vec<T>> {
        let mut map = self.lock();
        let q = map.get_mut(key)?;
        if q.is_empty() {
            map.remove(key);
            return None;
        }
        let n = q.len().min(max);
        Some(q.drain(..n).collect())
    }
}

/// Lets a key's drain start its next group before this one has ended. A group that never
/// calls [`Handoff::now`] hands off when it ends (the value is dropped with its task).
pub struct Handoff(Option<oneshot::Sender<()>>);

impl Handoff {
    /// Starts the next group now. Call it only while holding every lock the group takes (so
    /// the next group queues behind it) and once nothing is left to requeue.
    pub fn now(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Ends a drain: removes its key unless the drain removed it itself (if the drain task itself
/// is dropped, the queued callers' answers are dropped and they fail instead of waiting).
struct Draining<K: Hash + Eq, T> {
    queues: Arc<Queues<K, T>>,
    key: K,
    done: bool,
}

impl<K: Hash + Eq, T> Drop for Draining<K, T> {
    fn drop(&mut self) {
        if !self.done {
            let mut map = self
                .queues
                .map
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            map.remove(&self.key);
        }
    }
}

async fn drain<K, T, F, Fut>(queues: Arc<Queues<K, T>>, key: K, max: usize, run: F)
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Send + 'static,
    F: Fn(K, Vec<T>, Handoff) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut guard = Draining {
        queues,
        key,
        done: false,
    };
    // At most two groups of a key run at once: one committing, the next waiting for its locks.
    let mut previous: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(group) = guard.queues.next(&guard.key, max) {
        let (tx, handed_off) = oneshot::channel();
        let group = tokio::spawn(run(guard.key.clone(), group, Handoff(Some(tx))));
        if let Some(p) = previous.take() {
            // A panicked group dropped its callers' answers: they fail, the others go on.
            let _ = p.await;
        }
        // Fired by the group, or dropped when it ends (or panics).
        let _ = handed_off.await;
        previous = Some(group);
    }
    guard.done = true;
    if let Some(p) = previous {
        let _ = p.await;
    }
}

/// Why a group is taken again one by one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("an id of the group (a reservation's, an order's) was taken by another transaction meanwhile")]
    Raced,
}

impl GroupError {
    /// Whether the group's requests are worth taking again one by one: not when PostgreSQL
    /// could not be reached or a statement ran out of time (a lock held elsewhere), which each
    /// would only meet again, one after another, each waiting its own timeout. Those are all
    /// answered as unavailable at once (503: the client retries).
    pub(crate) fn one_by_one(&self) -> bool {
        match self {
            GroupError::Raced => true,
            GroupError::Db(e) => !matches!(
                crate::db::unavailable(e),
                Some(crate::db::Unavailable::Unreachable | crate::db::Unavailable::TimedOut)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::{mpsc, Notify};
    use tokio::time::timeout;

    type Seen = mpsc::UnboundedReceiver<(&'static str, Vec<u32>)>;

    /// A drain whose groups report their start and end, and the group holding item 1 waits
    /// for `release` before it ends; it hands off first when `hand_off` is set.
    fn start(
        queues: &Arc<Queues<u8, u32>>,
        item: u32,
        release: &Arc<Notify>,
        hand_off: bool,
        seen: &mpsc::UnboundedSender<(&'static str, Vec<u32>)>,
    ) {
        let (release, seen) = (Arc::clone(release), seen.clone());
        queues.push(7, item, 10, move |_key, items: Vec<u32>, mut handoff| {
            let (release, seen) = (Arc::clone(&release), seen.clone());
            async move {
                let _ = seen.send(("start", items.clone()));
                if hand_off {
                    handoff.now();
                }
                if items.contains(&1) {
                    release.notified().await;
                }
                let _ = seen.send(("end", items));
            }
        });
    }

    async fn next(seen: &mut Seen) -> Option<(&'static str, Vec<u32>)> {
        timeout(Duration::from_secs(5), seen.recv()).await.ok()?
    }

    #[tokio::test]
    async fn a_group_that_hands_off_lets_the_next_start_before_it_ends() {
        let queues = Arc::new(Queues::new());
        let release = Arc::new(Notify::new());
        let (tx, mut seen) = mpsc::unbounded_channel();
        start(&queues, 1, &release, true, &tx);
        assert_eq!(next(&mut seen).await, Some(("start", vec![1])));
        start(&queues, 2, &release, true, &tx);
        start(&queues, 3, &release, true, &tx);
        // Group [1] has handed off and is still running: the next group starts anyway, with
        // what queued meanwhile, in arrival order.
        let second = next(&mut seen).await;
        assert!(
            second == Some(("start", vec![2, 3])) || second == Some(("start", vec![2])),
            "{second:?}"
        );
        release.notify_one();
        let mut rest = Vec::new();
        while let Some(e) = timeout(Duration::from_millis(300), seen.recv())
            .await
            .ok()
            .flatten()
        {
            rest.push(e);
        }
        assert!(rest.contains(&("end", vec![1])), "{rest:?}");
    }

    #[tokio::test]
    async fn a_group_that_does_not_hand_off_runs_alone_until_it_ends() {
        let queues = Arc::new(Queues::new());
        let release = Arc::new(Notify::new());
        let (tx, mut seen) = mpsc::unbounded_channel();
        start(&queues, 1, &release, false, &tx);
        assert_eq!(next(&mut seen).await, Some(("start", vec![1])));
        start(&queues, 2, &release, false, &tx);
        start(&queues, 3, &release, false, &tx);
        // Nothing else starts while group [1] runs.
        assert!(timeout(Duration::from_millis(200), seen.recv())
            .await
            .is_err());
        release.notify_one();
        assert_eq!(next(&mut seen).await, Some(("end", vec![1])));
        assert_eq!(next(&mut seen).await, Some(("start", vec![2, 3])));
        assert_eq!(next(&mut seen).await, Some(("end", vec![2, 3])));
    }
}
