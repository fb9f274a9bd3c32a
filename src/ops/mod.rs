//! Operating omnistock: the ops view, operator commands, and the maintenance tools
//! (reconcile, import, export, load generation, the retail-day simulator).

pub mod bench;
pub mod deadletter;
pub mod export;
pub mod healthcheck;
pub mod import;
pub mod keys;
pub mod loadgen;
pub mod nats_config;
pub mod reconcile;
pub mod reservations_cli;
pub mod simulate;
pub mod summary;
