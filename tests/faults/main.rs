//! Fault injection: each test starts its own PostgreSQL, Redis and NATS (see `servers`) and
//! the daemon as a child process, then stops, kills, hangs and restarts them to prove the
//! promises of issue 8 under failure. Never the shared test instance: other tests run there.
//!
//! `cargo nextest run --test faults --no-capture` prints the measured figures.
//!
//! Environment:
//! - `OMNISTOCK_CHAOS_ROUNDS` (default 5), `OMNISTOCK_CHAOS_MOVEMENTS` (default 50000): size of
//!   the kill -9 test; the long form (`make chaos`) uses 20 and 100000 (about 2 minutes).
//! - `OMNISTOCK_CHAOS_SEED`: replays a kill -9 run (each run prints its seed).
//! - `OMNISTOCK_TEST_PG_BIN`, `OMNISTOCK_TEST_REDIS_SERVER`, `OMNISTOCK_TEST_NATS_SERVER`:
//!   where the server programs are; by default `initdb` on PATH (else the newest
//!   /usr/lib/postgresql/<v>/bin), `redis-server` on PATH, the nats-server that
//!   `scripts/services.sh install` pins into .omnistock/tools/ (`scripts/services.sh env test`
//!   exports all of this).
//! - `OMNISTOCK_FAULTS_KEEP=1`: keep each test's folder (data, server and daemon logs).
//! - `OMNISTOCK_LONG=1`: the 3-node cluster test publishes 50,000 movements instead of 3,000
//!   (`make chaos` sets it); `OMNISTOCK_CLUSTER_MOVEMENTS` sets the number.
//!
//! `nats_security` and `cluster` start only NATS servers of their own and use a fresh database
//! of the shared PostgreSQL (`DATABASE_URL`) and a unique prefix on the shared Redis
//! (`REDIS_URL`), as `scripts/services.sh env test` exports them.

mod cluster;
mod daemon;
mod kill9;
mod nats;
mod nats_security;
mod postgres;
mod redis;
#[path = "../common/serve.rs"]
mod serve;
mod servers;
mod support;
