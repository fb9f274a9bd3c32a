//! omnistock: one source of truth for stock across stores, warehouse and e-shop.
//!
//! Movements arrive over NATS JetStream ([`ingest`]), are applied exactly once to PostgreSQL
//! ([`apply`], [`db`]), cached in Redis ([`cache`]) and served over HTTP ([`http`]). The rules
//! themselves live in [`domain`], free of IO.
//!
//! Error policy: library code returns typed errors where a caller decides on them (`sqlx::Error`
//! for retry decisions, [`http::error::ApiError`] for status codes) and `anyhow::Error` with
//! context where the only decision is to report. Nothing panics on input; `unwrap` is linted.

pub mod app;
pub mod apply;
pub mod cache;
pub mod channel_feed;
pub mod channels;
pub mod cli;
pub mod commit;
pub mod config;
pub mod db;
pub mod directory;
pub mod domain;
pub mod events;
pub mod events_hub;
pub mod export;
pub mod failpoint;
pub mod http;
pub mod import;
pub mod ingest;
pub mod jobs;
pub mod loadgen;
pub mod metrics;
pub mod nats_config;
pub mod ops;
pub mod otel;
pub mod outbox;
pub mod reconcile;
pub mod reservations;
pub mod routing;
pub mod shutdown;
pub mod supply;
pub mod telemetry;
