//! Integration tests against real PostgreSQL, Redis and NATS (started by `make test`).
//! One binary, many modules: one link step instead of one per file.

mod cache;
mod cache_staleness;
mod channels;
mod daemon_process;
mod dashboards;
mod docs;
mod events;
mod helpers;
mod hostile;
mod http_api;
mod http_layers;
mod import;
mod ingest;
mod ingest_pipeline;
mod metrics;
mod model;
mod movements;
mod ops_cli;
mod page;
mod parent_checks;
mod process_http;
mod races;
mod reconcile;
mod reservations;
mod resilience;
mod routing;
mod routing_split;
#[path = "../common/serve.rs"]
mod serve;
mod simulate;
mod sse;
mod supply;
mod totals;
