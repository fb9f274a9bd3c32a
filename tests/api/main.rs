//! Integration tests against real PostgreSQL, Redis and NATS (started by `make test`).
//! One binary, many modules: one link step instead of one per file.

mod cache;
mod cache_staleness;
mod channels;
mod docs;
mod events;
mod helpers;
mod hostile;
mod http_api;
mod import;
mod ingest;
mod model;
mod movements;
mod page;
mod races;
mod reconcile;
mod reservations;
mod resilience;
mod routing;
mod routing_split;
mod sse;
mod supply;
