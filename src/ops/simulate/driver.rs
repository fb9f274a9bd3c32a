//! Runs a plan against a daemon in real time: movements over NATS on the contract's subjects,
//! everything else over the HTTP API with an API key. Every wait is bounded: each request by
//! its timeout, the dispatch by the run's deadline, the drain by a grace period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::Utc;
use indicatif::ProgressBar;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::api::{self, HoldAnswer, HoldRequest, MovementBody, RouteAnswer, RouteRequest};
use super::audit::Granted;
use super::plan::{Action, Outcome, PlannedMovement, Step};
use super::summary::{Collector, StepResult};
use crate::config::Subjects;

/// Where and how to send.
pub struct Target {
    pub http: reqwest::Client,
    pub base_url: String,
    pub api_key: String,
    pub js: jetstream::Context,
    pub subjects: Subjects,
    /// Prefix of this run's event, reservation, order and transfer ids.
    pub tag: String,
    pub request_timeout: Duration,
    pub abandon_ttl_seconds: i64,
}

pub struct Limits {
    pub concurrency: usize,
    /// No step starts after this (from the start of the run).
    pub dispatch_deadline: Duration,
    /// How long started steps may take to finish after dispatch ends.
    pub drain: Duration,
}

/// Runs the steps; returns how many were never started (the deadline came first).
pub async fn run(
    target: Arc<Target>,
    steps: &[Step],
    limits: &Limits,
    stats: Arc<Collector>,
    bar: &ProgressBar,
) -> u64 {
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(limits.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    let mut not_started = 0u64;
    for (i, step) in steps.iter().enumerate() {
        let due = started + Duration::from_millis(step.at_ms);
        let deadline = started + limits.dispatch_deadline;
        if due > deadline {
            not_started = (steps.len() - i) as u64;
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = tokio::time::sleep_until(deadline.into()) => {
                not_started = (steps.len() - i) as u64;
                break;
            }
        };
        let Ok(permit) = permit else {
            break;
        };
        bar.set_message(format!(
            "sim {:02}:{:02}",
            step.minute / 60,
            step.minute % 60
        ));
        let (t, s, step) = (target.clone(), stats.clone(), step.clone());
        let bar = bar.clone();
        tasks.spawn(async move {
            let r = execute(&t, &s, &step).await;
            s.finish(step.label, r);
            bar.inc(1);
            drop(permit);
        });
        // Reap finished tasks as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(limits.drain, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let left = tasks.len();
        stats.error(format!(
            "step still running after the drain period ({left})"
        ));
        tasks.abort_all();
    }
    not_started
}

async fn execute(t: &Target, s: &Collector, step: &Step) -> StepResult {
    match &step.action {
        Action::Publish {
            location_id,
            movements,
        } => {
            let ok = publish(t, s, step, location_id, movements, None).await;
            if ok {
                StepResult::Ok
            } else {
                StepResult::Error
            }
        }
        Action::Read { sku, near } => {
            let path = match near {
                None => format!("/v1/availability/{}", encode(sku)),
                Some((lat, lon)) => format!(
                    "/v1/availability/{}/nearby?lat={lat:.5}&lon={lon:.5}&radius_km=30",
                    encode(sku)
                ),
            };
            match call::<()>(t, s, "read", Method::GET, &path, None).await {
                Some((StatusCode::OK, _)) => StepResult::Ok,
                other => unexpected(s, "read", other),
            }
        }
        Action::Checkout {
            location_id,
            lines,
            outcome,
        } => checkout(t, s, step, location_id, lines, *outcome).await,
        Action::Route {
            pickup_location_id,
            customer,
            lines,
            outcome,
        } => {
            route(
                t,
                s,
                step,
                pickup_location_id.as_deref(),
                *customer,
                lines,
                *outcome,
            )
            .await
        }
    }
}

async fn checkout(
    t: &Target,
    s: &Collector,
    step: &Step,
    location_id: &str,
    lines: &[(String, i64)],
    outcome: Outcome,
) -> StepResult {
    let id = format!("{}-r{}", t.tag, step.seq);
    let body = HoldRequest {
        reservation_id: &id,
        location_id,
        lines: api::lines(lines),
        ttl_seconds: (outcome == Outcome::Expire).then_some(t.abandon_ttl_seconds),
    };
    let answer = call(t, s, "hold", Method::POST, "/v1/reservations", Some(&body)).await;
    let reservation_id = match answer {
        Some((StatusCode::CREATED, bytes)) => match serde_json::from_slice::<HoldAnswer>(&bytes) {
            Ok(a) => a.reservation_id,
            Err(_) => {
                s.error("hold: unreadable 201 answer".into());
                return StepResult::Error;
            }
        },
        Some((StatusCode::CONFLICT, _)) => {
            s.with(|c| c.holds.answered_409 += 1);
            return StepResult::Rejected;
        }
        other => return unexpected(s, "hold", other),
    };
    s.with(|c| {
        c.holds.answered_201 += 1;
        c.granted.push(Granted {
            reservation_id: reservation_id.clone(),
            location_id: location_id.to_owned(),
            lines: lines.to_vec(),
        });
    });
    finish_hold(
        t,
        s,
        step,
        location_id,
        &reservation_id,
        lines,
        outcome,
        true,
    )
    .await
}

/// What the shopper does with a hold they got: pay (confirm, then the sale carrying the
/// reservation), give up (release), or walk away (leave it to expire).
#[allow(clippy::too_many_arguments)]
async fn finish_hold(
    t: &Target,
    s: &Collector,
    step: &Step,
    location_id: &str,
    reservation_id: &str,
    lines: &[(String, i64)],
    outcome: Outcome,
    confirm: bool,
) -> StepResult {
    let path = format!("/v1/reservations/{}", encode(reservation_id));
    match outcome {
        Outcome::Buy => {
            if confirm {
                match call::<()>(
                    t,
                    s,
                    "confirm",
                    Method::POST,
                    &format!("{path}/confirm"),
                    None,
                )
                .await
                {
                    Some((StatusCode::OK, _)) => s.with(|c| c.holds.confirmed += 1),
                    other => return unexpected(s, "confirm", other),
                }
            }
            let sale: Vec<PlannedMovement> = lines
                .iter()
                .map(|(sku, q)| PlannedMovement {
                    kind: crate::domain::movement::MovementKind::Sale,
                    sku: sku.clone(),
                    quantity: *q,
                    transfer: None,
                })
                .collect();
            if !publish(t, s, step, location_id, &sale, Some(reservation_id)).await {
                return StepResult::Error;
            }
            s.with(|c| c.holds.sold_with_reservation += 1);
            StepResult::Ok
        }
        Outcome::Release => match call::<()>(t, s, "release", Method::DELETE, &path, None).await {
            Some((StatusCode::OK, _)) => {
                s.with(|c| c.holds.released += 1);
                StepResult::Ok
            }
            other => unexpected(s, "release", other),
        },
        Outcome::Expire => {
            s.with(|c| c.holds.left_to_expire += 1);
            StepResult::Ok
        }
    }
}

async fn route(
    t: &Target,
    s: &Collector,
    step: &Step,
    pickup: Option<&str>,
    customer: (f64, f64),
    lines: &[(String, i64)],
    outcome: Outcome,
) -> StepResult {
    let order_id = format!("{}-o{}", t.tag, step.seq);
    let body = RouteRequest {
        order_id: &order_id,
        lines: api::lines(lines),
        fulfilment: if pickup.is_some() {
            "pickup"
        } else {
            "delivery"
        },
        customer: api::Customer {
            lat: customer.0,
            lon: customer.1,
        },
        pickup_location_id: pickup,
    };
    let answer = match call(t, s, "route", Method::POST, "/v1/orders/route", Some(&body)).await {
        Some((StatusCode::OK, bytes)) => match serde_json::from_slice::<RouteAnswer>(&bytes) {
            Ok(a) => a,
            Err(_) => {
                s.error("route: unreadable 200 answer".into());
                return StepResult::Error;
            }
        },
        Some((StatusCode::CONFLICT, _)) => return StepResult::Rejected,
        other => return unexpected(s, "route", other),
    };
    let mut result = StepResult::Ok;
    for a in answer.assignments {
        let Some(rid) = a.reservation_id else {
            continue;
        };
        let held: Vec<(String, i64)> = a.lines.into_iter().map(|l| (l.sku, l.quantity)).collect();
        s.with(|c| {
            c.holds.answered_201 += 1;
            c.granted.push(Granted {
                reservation_id: rid.clone(),
                location_id: a.location_id.clone(),
                lines: held.clone(),
            });
        });
        // A routed order is placed: its holds are confirmed, then sold when shipped or
        // collected; an abandoned one is released (routes are never left to expire here).
        let outcome = if outcome == Outcome::Expire {
            Outcome::Release
        } else {
            outcome
        };
        let r = finish_hold(t, s, step, &a.location_id, &rid, &held, outcome, true).await;
        if r != StepResult::Ok {
            result = r;
        }
    }
    result
}

/// Publishes one message and waits for JetStream's ack (bounded). Counts its movements.
async fn publish(
    t: &Target,
    s: &Collector,
    step: &Step,
    location_id: &str,
    movements: &[PlannedMovement],
    reservation_id: Option<&str>,
) -> bool {
    let now = Utc::now();
    let reference = format!("sim {:02}:{:02}", step.minute / 60, step.minute % 60);
    let suffix = if reservation_id.is_some() { "s" } else { "m" };
    let bodies: Vec<MovementBody<'_>> = movements
        .iter()
        .enumerate()
        .map(|(i, m)| MovementBody {
            event_id: format!("{}-{}{suffix}{i}", t.tag, step.seq),
            location_id,
            sku: &m.sku,
            kind: m.kind.as_str(),
            quantity: m.quantity,
            occurred_at: now,
            source: "simulate",
            reference: reference.clone(),
            reservation_id,
            transfer_id: m
                .transfer
                .as_ref()
                .map(|(id, _)| format!("{}-t{id}", t.tag)),
            to_location_id: m.transfer.as_ref().and_then(|(_, to)| to.as_deref()),
        })
        .collect();
    let payload = if bodies.len() == 1 {
        serde_json::to_vec(&bodies[0])
    } else {
        serde_json::to_vec(&bodies)
    };
    let Ok(payload) = payload else {
        s.error("publish: could not encode".into());
        return false;
    };
    let n = movements.len() as u64;
    let begun = Instant::now();
    let acked = tokio::time::timeout(t.request_timeout, async {
        t.js.publish(t.subjects.movements(location_id), payload.into())
            .await?
            .await
            .map_err(anyhow::Error::from)
    })
    .await;
    match acked {
        Ok(Ok(_)) => {
            s.latency("publish", begun.elapsed().as_secs_f64() * 1000.0);
            s.with(|c| c.movements.accepted += n);
            true
        }
        Ok(Err(e)) => {
            s.error(format!("publish: {}", short(&e.to_string())));
            s.with(|c| c.movements.not_accepted += n);
            false
        }
        Err(_) => {
            s.error("publish: timeout".into());
            s.with(|c| c.movements.not_accepted += n);
            false
        }
    }
}

/// One HTTP call with the run's key and timeout; `None` when it got no answer (the error is
/// counted). The latency of answered calls is recorded under `op`.
async fn call<B: Serialize>(
    t: &Target,
    s: &Collector,
    op: &'static str,
    method: Method,
    path: &str,
    body: Option<&B>,
) -> Option<(StatusCode, bytes::Bytes)> {
    let mut req = t
        .http
        .request(method, format!("{}{path}", t.base_url))
        .bearer_auth(&t.api_key)
        .timeout(t.request_timeout);
    if let Some(b) = body {
        req = req.json(b);
    }
    let begun = Instant::now();
    let answer = async {
        let r = req.send().await?;
        let status = r.status();
        let bytes = r.bytes().await?;
        Ok::<_, reqwest::Error>((status, bytes))
    }
    .await;
    match answer {
        Ok(a) => {
            s.latency(op, begun.elapsed().as_secs_f64() * 1000.0);
            Some(a)
        }
        Err(e) if e.is_timeout() => {
            s.error(format!("{op}: timeout"));
            None
        }
        Err(e) => {
            s.error(format!("{op}: {}", short(&e.to_string())));
            None
        }
    }
}

fn unexpected(s: &Collector, op: &str, answer: Option<(StatusCode, bytes::Bytes)>) -> StepResult {
    if let Some((status, bytes)) = answer {
        // The error code names the cause (`rate_limited`, `unavailable`...); keep it short.
        let code = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_default();
        s.error(
            format!("{op}: {} {code}", status.as_u16())
                .trim_end()
                .to_owned(),
        );
    }
    StepResult::Error
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Percent-encodes a path segment (SKUs may hold `/`, spaces...).
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(super::encode("TEE-RED/M 2"), "TEE-RED%2FM%202");
    }
}
