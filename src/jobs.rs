//! Background jobs under supervision. Each job runs until the shutdown token is cancelled; a
//! job that returns before that, or panics, is dead: it is logged, counted, shown as down by
//! `/readyz` and `/metrics`, and started again after a backoff (doubling up to
//! [`MAX_BACKOFF`], back to [`FIRST_BACKOFF`] once a run has lasted [`HEALTHY_RUN`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::metrics::{JOB_LAST_SUCCESS, JOB_RESTARTS, JOB_UP};

pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long counts as healthy: the next death starts the backoff from the beginning.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, Default)]
struct JobState {
    up: bool,
    restarts: u64,
}

/// What every supervised job is doing, shared with `/readyz` and `/metrics`.
#[derive(Clone, Default)]
pub struct JobStatus {
    jobs: Arc<Mutex<BTreeMap<&'static str, JobState>>>,
}

impl JobStatus {
    fn update(&self, name: &'static str, f: impl FnOnce(&mut JobState)) {
        if let Ok(mut jobs) = self.jobs.lock() {
            let state = jobs.entry(name).or_default();
            let restarts = state.restarts;
            f(state);
            metrics::gauge!(JOB_UP, "job" => name).set(f64::from(u8::from(state.up)));
            metrics::counter!(JOB_RESTARTS, "job" => name).increment(state.restarts - restarts);
        }
    }

    /// The jobs that are dead right now (waiting to be restarted), by name.
    pub fn down(&self) -> Vec<&'static str> {
        self.jobs
            .lock()
            .map(|j| j.iter().filter(|(_, s)| !s.up).map(|(n, _)| *n).collect())
            .unwrap_or_default()
    }

    /// Times the job was restarted after dying.
    pub fn restarts(&self, name: &str) -> u64 {
        self.jobs
            .lock()
            .ok()
            .and_then(|j| j.get(name).map(|s| s.restarts))
            .unwrap_or(0)
    }

    /// Sets `omnistock_job_up` and `omnistock_job_restarts_total` from this daemon's jobs
    /// (the recorder is per process; a process running several daemons, as the tests do, shows
    /// the scraped one's).
    pub fn publish(&self) {
        let jobs: Vec<(&'static str, JobState)> = self
            .jobs
            .lock()
            .map(|j| j.iter().map(|(n, s)| (*n, *s)).collect())
            .unwrap_or_default();
        for (name, s) in jobs {
            metrics::gauge!(JOB_UP, "job" => name).set(f64::from(u8::from(s.up)));
            metrics::counter!(JOB_RESTARTS, "job" => name).absolute(s.restarts);
        }
    }
}

tokio::task_local! {
    /// The name of the supervised job running on this task.
    static JOB: &'static str;
}

/// Called by a job when it completes a unit of work (a batch, a tick, a refresh): sets its
/// `omnistock_job_last_success_timestamp_seconds`, which an alert compares with the time to
/// find a job that runs but no longer gets anything done. Outside a supervised job, nothing.
pub fn succeeded() {
    let _ = JOB.try_with(|name| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!(JOB_LAST_SUCCESS, "job" => *name).set(now);
    });
}

/// Runs `fut` as part of the calling task's job, for a task the job spawns: its
/// [`succeeded`] calls count for that job (a task-local is not inherited by `tokio::spawn`).
pub fn within_current_job<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let name = JOB.try_with(|n| *n).ok();
    async move {
        match name {
            Some(name) => JOB.scope(name, fut).await,
            None => fut.await,
        }
    }
}

/// Starts jobs, restarts the dead ones, and waits for them all at shutdown.
pub struct Supervisor {
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    status: JobStatus,
    first_backoff: Duration,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken, status: JobStatus) -> Self {
        Supervisor {
            shutdown,
            tasks: JoinSet::new(),
            status,
            first_backoff: FIRST_BACKOFF,
        }
    }

    /// The first wait before restarting a dead job, for jobs spawned from now on (doubling
    /// from there up to [`MAX_BACKOFF`]).
    pub fn set_first_backoff(&mut self, wait: Duration) {
        self.first_backoff = wait;
    }

    pub fn status(&self) -> &JobStatus {
        &self.status
    }

    /// Supervises a job: `start` makes a fresh run of it, which must only end once the token
    /// it is given is cancelled.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, start: F)
    where
        F: FnMut(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.status.update(name, |s| s.up = true);
        let supervised = supervise(
            name,
            start,
            self.first_backoff,
            self.shutdown.clone(),
            self.status.clone(),
        );
        self.tasks
            .spawn(supervised.instrument(tracing::info_span!("job", job = name)));
    }

    /// Supervises a periodic job: `tick` runs every `period` (the first time one period after
    /// the start), never two at once; a slow tick delays the next rather than piling up. A
    /// tick in progress at shutdown is finished, unless it watches the token it is given.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, tick: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let tick = Arc::new(tick);
        self.spawn(name, move |shutdown| {
            let tick = Arc::clone(&tick);
            async move { periodic(&shutdown, period, || tick(shutdown.clone())).await }
        });
    }

    /// After the token is cancelled: waits at most `grace` for every job to end, then aborts
    /// the rest. Returns whether all ended by themselves.
    pub async fn join(mut self, grace: Duration) -> bool {
        let tasks = &mut self.tasks;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
            return false;
        }
        true
    }
}

/// The body of a periodic job: runs `tick` every `period` (the first time one period from now)
/// until `shutdown`; a slow tick delays the next rather than piling up.
pub async fn periodic<F, Fut>(shutdown: &CancellationToken, period: Duration, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut timer = tokio::time::interval_at(Instant::now() + period, period);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = timer.tick() => {}
        }
        tick().await;
    }
}

/// The body of a job that keeps an in-memory copy fresh: runs `refresh` whenever any daemon
/// announces a change on `subject`, and every 30 seconds in case an announcement was missed
/// (without NATS it refreshes periodically only).
pub async fn refresh_on_announce<F, Fut>(
    what: &'static str,
    nats: async_nats::Client,
    subject: String,
    shutdown: CancellationToken,
    mut refresh: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), sqlx::Error>>,
{
    use futures::StreamExt;
    let mut changes = match nats.subscribe(subject).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, what, "cannot subscribe to changes; refreshing periodically only");
            None
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        let announced = async {
            match changes.as_mut() {
                Some(s) => s.next().await.is_some(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
            got = announced => if !got { changes = None; },
        }
        match refresh().await {
            Ok(()) => succeeded(),
            Err(e) => tracing::warn!(error = %e, what, "refresh failed"),
        }
    }
}

async fn supervise<F, Fut>(
    name: &'static str,
    mut start: F,
    first_backoff: Duration,
    shutdown: CancellationToken,
    status: JobStatus,
) where
    F: FnMut(CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = first_backoff;
    loop {
        let started = Instant::now();
        // A panic unwinds to here instead of ending the task silently; the job's state was
        // its own, and a fresh run starts from scratch.
        let outcome = JOB
            .scope(
                name,
                AssertUnwindSafe(start(shutdown.clone())).catch_unwind(),
            )
            .await;
        if shutdown.is_cancelled() {
            if let Err(panic) = outcome {
                tracing::error!(job = name, panic = %panic_message(&*panic), "background job panicked while stopping");
            }
            tracing::debug!(job = name, "background job finished");
            return;
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = first_backoff;
        }
        status.update(name, |s| s.up = false);
        match outcome {
            Ok(()) => tracing::error!(
                job = name,
                restart_in_ms = backoff.as_millis() as u64,
                "background job ended unexpectedly; restarting it"
            ),
            Err(panic) => tracing::error!(
                job = name,
                panic = %panic_message(&*panic),
                restart_in_ms = backoff.as_millis() as u64,
                "background job panicked; restarting it"
            ),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF.max(first_backoff));
        status.update(name, |s| {
            s.up = true;
            s.restarts += 1;
        });
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn a_dead_job_is_down_until_restarted_and_a_clean_stop_is_not_a_death() {
        crate::metrics::handle();
        let token = CancellationToken::new();
        let mut jobs = Supervisor::new(token.clone(), JobStatus::default());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&runs);
        jobs.spawn("flaky", move |shutdown| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => panic!("first run dies"),
                    1 => {}
                    _ => shutdown.cancelled().await,
                }
            }
        });
        let status = jobs.status().clone();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(status.down(), vec!["flaky"], "panicked, not restarted yet");
        tokio::time::sleep(FIRST_BACKOFF).await;
        // The second run returned at once: dead again, with a doubled backoff.
        assert_eq!(status.down(), vec!["flaky"]);
        assert_eq!(status.restarts("flaky"), 1);
        tokio::time::sleep(FIRST_BACKOFF * 2).await;
        assert!(status.down().is_empty());
        assert_eq!(status.restarts("flaky"), 2);
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        token.cancel();
        assert!(jobs.join(Duration::from_secs(1)).await);
        assert!(status.down().is_empty(), "stopping is not dying");
        status.publish();
        let text = crate::metrics::render();
        assert!(text.contains("omnistock_job_up{job=\"flaky\"} 1"), "{text}");
        assert!(text.contains("omnistock_job_restarts_total{job=\"flaky\"} 2"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_periodic_job_ticks_every_period_and_join_aborts_past_the_grace() {
        let token = CancellationToken::new();
        let mut jobs = Supervisor::new(token.clone(), JobStatus::default());
        let ticks = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&ticks);
        jobs.every("ticker", Duration::from_secs(1), move |_| {
            let counted = Arc::clone(&counted);
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        jobs.spawn("stubborn", |_| std::future::pending());
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        assert_eq!(ticks.load(Ordering::SeqCst), 3);
        token.cancel();
        assert!(
            !jobs.join(Duration::from_secs(1)).await,
            "stubborn is aborted"
        );
    }
}
