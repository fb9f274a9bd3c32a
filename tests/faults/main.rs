//! Fault injection: each test starts its own PostgreSQL, Redis and NATS (see `servers`) and
//! the daemon as a child process, then stops, kills, hangs and restarts them to prove the
//! promises of issue 8 under failure. Never the shared test instance: other tests run there.
//!
//! `cargo nextest run --test faults --no-capture` prints the measured figures. The kill -9
//! test has a long form (see `kill9`).

mod daemon;
mod kill9;
mod nats;
mod postgres;
mod redis;
mod servers;
mod support;
