//! Level change events, fanned out inside the daemon.
//!
//! One core-NATS subscription per daemon on `<prefix>.changes.>` (the subject the outbox relay
//! publishes every level change to) feeds a [`tokio::sync::broadcast`] channel; every live
//! client (`GET /v1/stream`) holds a receiver and filters it by SKU and location. A client too
//! slow for the channel's buffer is told how many events it missed ([`Delivery::Lagged`]) and
//! carries on. When the daemon stops, the job closes the channel, which ends every client stream
//! so that graceful shutdown is not held up by open connections.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use crate::config::Subjects;
use crate::metrics::METRICS;

/// Events buffered per client before a slow one starts losing them.
pub const CAPACITY: usize = 4096;

/// How long a new client waits for the NATS subscription to be in place at start-up, so that a
/// client that got its response headers sees every change published after that.
const LIVE_WAIT: Duration = Duration::from_secs(2);

/// One change event as received from NATS, with what clients filter on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The event's `event_id`, when it is usable as an SSE `id` (no CR, LF or NUL).
    pub event_id: Option<String>,
    pub location_id: String,
    pub sku: String,
    /// The event as one line of JSON.
    pub data: String,
}

#[derive(Deserialize)]
struct Head {
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    location_id: Option<String>,
    sku: String,
}

impl Change {
    /// Reads a change event body. `subject_location` (the last token of the subject) stands in
    /// for a body without `location_id`. `None` when the body is not a JSON object with a
    /// string `sku`.
    pub fn parse(subject_location: Option<&str>, payload: &[u8]) -> Option<Change> {
        let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
        if !value.is_object() {
            return None;
        }
        let head = Head::deserialize(&value).ok()?;
        let location_id = head
            .location_id
            .or_else(|| subject_location.map(str::to_owned))?;
        // Forward the body as published when it is already one line; otherwise re-encode it
        // compactly (an SSE data field ends at a line break).
        let data = match std::str::from_utf8(payload) {
            Ok(s) if !s.contains(['\r', '\n']) => s.trim().to_owned(),
            _ => value.to_string(),
        };
        let event_id = head
            .event_id
            .filter(|id| !id.is_empty() && !id.contains(['\r', '\n', '\0']));
        Some(Change {
            event_id,
            location_id,
            sku: head.sku,
            data,
        })
    }
}

/// What a client asked to see; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub sku: Option<String>,
    pub location_id: Option<String>,
}

impl Filter {
    pub fn matches(&self, c: &Change) -> bool {
        self.sku.as_deref().is_none_or(|s| s == c.sku)
            && self
                .location_id
                .as_deref()
                .is_none_or(|l| l == c.location_id)
    }
}

/// What a client stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    Change(Arc<Change>),
    /// The client fell this many events behind and they were dropped for it.
    Lagged(u64),
}

/// The fan-out point, shared by the HTTP handlers (which subscribe) and the job (which
/// publishes). Cheap to clone.
#[derive(Clone)]
pub struct ChangeHub {
    inner: Arc<Inner>,
}

struct Inner {
    /// Taken (dropped) on close: once the job's clone is gone too, every receiver ends.
    tx: Mutex<Option<broadcast::Sender<Arc<Change>>>>,
    /// Whether the NATS subscription is in place.
    live: watch::Sender<bool>,
}

impl Default for ChangeHub {
    fn default() -> Self {
        Self::new(CAPACITY)
    }
}

impl ChangeHub {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let (live, _) = watch::channel(false);
        ChangeHub {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                live,
            }),
        }
    }

    fn sender(&self) -> Option<broadcast::Sender<Arc<Change>>> {
        self.inner.tx.lock().ok().and_then(|tx| tx.clone())
    }

    /// Clients currently subscribed.
    pub fn clients(&self) -> usize {
        self.sender().map_or(0, |tx| tx.receiver_count())
    }

    /// Ends every client stream (after the events already buffered for it) and refuses new
    /// ones.
    pub fn close(&self) {
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
        self.inner.live.send_replace(false);
    }

    fn set_live(&self, live: bool) {
        self.inner.live.send_replace(live);
    }

    /// Waits (at most `limit`) until the NATS subscription is in place.
    pub async fn wait_live(&self, limit: Duration) -> bool {
        let mut rx = self.inner.live.subscribe();
        let live = tokio::time::timeout(limit, rx.wait_for(|live| *live)).await;
        matches!(live, Ok(Ok(_)))
    }

    /// A stream of the changes matching `filter`, from now on; `None` once the hub is closed.
    /// The stream ends when the hub closes.
    pub fn subscribe(
        &self,
        filter: Filter,
    ) -> Option<impl Stream<Item = Delivery> + Send + 'static> {
        let rx = self.sender()?.subscribe();
        let state = (rx, filter, ClientGuard::new());
        Some(futures::stream::unfold(
            state,
            |(mut rx, filter, guard)| async move {
                loop {
                    match rx.recv().await {
                        Ok(c) if filter.matches(&c) => {
                            return Some((Delivery::Change(c), (rx, filter, guard)))
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            METRICS.sse_lagged_events.add(n);
                            return Some((Delivery::Lagged(n), (rx, filter, guard)));
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }

    /// [`ChangeHub::subscribe`], after waiting briefly for the NATS subscription at start-up.
    pub async fn subscribe_live(
        &self,
        filter: Filter,
    ) -> Option<impl Stream<Item = Delivery> + Send + 'static> {
        let stream = self.subscribe(filter)?;
        if !self.wait_live(LIVE_WAIT).await {
            tracing::debug!("change subscription not confirmed yet; streaming anyway");
        }
        Some(stream)
    }
}

/// Counts a connected client for `/metrics` while it lives.
struct ClientGuard;

impl ClientGuard {
    fn new() -> Self {
        METRICS.sse_clients.inc();
        ClientGuard
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        METRICS.sse_clients.dec();
    }
}

/// Background job: subscribes to every change event and fans them out to the hub until
/// `shutdown`, then closes the hub (which ends every client stream). Resubscribes if the
/// subscription ever ends.
pub async fn run_fanout_job(
    hub: ChangeHub,
    nats: async_nats::Client,
    subjects: Subjects,
    shutdown: CancellationToken,
) {
    let Some(tx) = hub.sender() else {
        return;
    };
    let location_prefix = format!("{}.changes.", subjects.prefix);
    let wildcard = subjects.changes_wildcard();
    while !shutdown.is_cancelled() {
        match nats.subscribe(wildcard.clone()).await {
            Ok(mut sub) => {
                // Make sure the server has the subscription before clients are told it is live.
                match tokio::time::timeout(Duration::from_secs(5), nats.flush()).await {
                    Ok(Ok(())) => {}
                    _ => tracing::warn!(
                        "NATS did not confirm the change subscription; it applies once NATS answers"
                    ),
                }
                hub.set_live(true);
                crate::jobs::succeeded();
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        msg = sub.next() => match msg {
                            Some(m) => {
                                METRICS.change_events_received.inc();
                                crate::jobs::succeeded();
                                let loc = m.subject.strip_prefix(location_prefix.as_str());
                                match Change::parse(loc, &m.payload) {
                                    // No receiver is not an error: nobody is watching.
                                    Some(c) => { let _ = tx.send(Arc::new(c)); }
                                    None => tracing::debug!(subject = %m.subject, "ignoring a change event that is not a JSON object with `sku`"),
                                }
                            }
                            None => {
                                tracing::warn!("change subscription ended; subscribing again");
                                break;
                            }
                        },
                    }
                }
                hub.set_live(false);
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to change events; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    drop(tx);
    hub.close();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: &str, loc: &str, sku: &str) -> Change {
        Change {
            event_id: Some(id.into()),
            location_id: loc.into(),
            sku: sku.into(),
            data: format!(r#"{{"event_id":"{id}"}}"#),
        }
    }

    #[test]
    fn parses_change_bodies() {
        let c = Change::parse(
            Some("TW001"),
            br#"{"event_id": "chg-1", "location_id": "TW001", "sku": "GIFT CARD/500", "on_hand": 3}"#,
        )
        .expect("valid");
        assert_eq!(c.event_id.as_deref(), Some("chg-1"));
        assert_eq!(c.location_id, "TW001");
        assert_eq!(c.sku, "GIFT CARD/500");
        assert!(c.data.contains(r#""on_hand": 3"#), "forwarded as published");

        // Multi-line JSON is re-encoded on one line; the subject supplies a missing location.
        let c = Change::parse(
            Some("TW002"),
            b"{\n \"sku\": \"A\",\r\n \"event_id\": \"x\\ny\"\n}",
        )
        .expect("valid");
        assert_eq!(c.location_id, "TW002");
        assert!(!c.data.contains(['\n', '\r']));
        assert_eq!(
            c.event_id, None,
            "an id with a line break cannot be an SSE id"
        );

        assert_eq!(Change::parse(Some("TW001"), b"not json"), None);
        assert_eq!(Change::parse(Some("TW001"), b"[1, 2]"), None);
        assert_eq!(
            Change::parse(Some("TW001"), br#"{"location_id": "TW001"}"#),
            None
        );
        assert_eq!(Change::parse(None, br#"{"sku": "A"}"#), None);
    }

    #[test]
    fn filters_by_sku_and_location() {
        let c = change("1", "TW001", "A");
        assert!(Filter::default().matches(&c));
        let f = |sku: Option<&str>, loc: Option<&str>| Filter {
            sku: sku.map(Into::into),
            location_id: loc.map(Into::into),
        };
        assert!(f(Some("A"), None).matches(&c));
        assert!(f(None, Some("TW001")).matches(&c));
        assert!(f(Some("A"), Some("TW001")).matches(&c));
        assert!(!f(Some("a"), None).matches(&c), "SKUs are case-sensitive");
        assert!(!f(Some("A"), Some("TW002")).matches(&c));
    }

    #[tokio::test]
    async fn a_slow_client_is_told_what_it_missed_and_streams_end_on_close() {
        let hub = ChangeHub::new(2);
        let stream = hub.subscribe(Filter::default()).expect("open");
        let tx = hub.sender().expect("open");
        for i in 0..5 {
            tx.send(Arc::new(change(&i.to_string(), "TW001", "A")))
                .expect("a receiver");
        }
        assert_eq!(hub.clients(), 1);
        drop(tx);
        hub.close();
        assert!(hub.subscribe(Filter::default()).is_none(), "closed");
        let got: Vec<Delivery> = stream.collect().await;
        assert_eq!(
            got,
            vec![
                Delivery::Lagged(3),
                Delivery::Change(Arc::new(change("3", "TW001", "A"))),
                Delivery::Change(Arc::new(change("4", "TW001", "A"))),
            ]
        );
    }
}
