//! omnistock: one source of truth for stock across stores, warehouse and e-shop.
//!
//! Movements arrive over NATS JetStream ([`ingest`]), are applied exactly once to PostgreSQL
//! ([`ingest::apply`], [`db`]), cached in Redis ([`cache`]) and served over HTTP ([`http`]). The rules
//! themselves live in [`domain`], free of IO.
//!
//! Error policy: library code returns typed errors where a caller decides on them (`sqlx::Error`
//! for retry decisions, [`http::error::ApiError`] for status codes) and `anyhow::Error` with
//! context where the only decision is to report. Nothing panics on input; `unwrap` is linted.

pub mod app;
pub mod cache;
pub mod channels;
pub mod cli;
pub mod commit;
pub mod config;
pub mod db;
pub mod directory;
pub mod domain;
pub mod events;
pub mod failpoint;
pub mod holds;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod ops;
pub mod shutdown;
pub mod supply;
pub mod telemetry;
