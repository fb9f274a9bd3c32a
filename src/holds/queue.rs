//! Keyed work queues drained in groups: what group commit (of holds, of routes) is built on.
//!
//! Requests for one key wait in memory while one task per busy key drains them, many per
//! transaction. While a group commits the next one gathers, so the group grows with the load
//! and a lone request goes through at once.

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
    /// runs already. `run` gets at most `max` items at a time, in arrival order.
    pub fn push<F, Fut>(self: &Arc<Self>, key: K, item: T, max: usize, run: F)
    where
        F: Fn(K, Vec<T>) -> Fut + Send + Sync + 'static,
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
    /// running drain calls it, so the key is present; if not, the items are dropped and their
    /// callers fail instead of waiting.
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

/// Ends a drain: removes its key unless the drain removed it itself (on a panic, the queued
/// callers' answers are dropped and they fail instead of waiting).
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
    F: Fn(K, Vec<T>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut guard = Draining {
        queues,
        key,
        done: false,
    };
    while let Some(group) = guard.queues.next(&guard.key, max) {
        run(guard.key.clone(), group).await;
    }
    guard.done = true;
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
