//! Fail points, for tests only: places where a test makes the real daemon crash on purpose.
//!
//! Compiled into every build so tests can drive the real binary, and inert unless the
//! environment variable `OMNISTOCK_FAILPOINT` names the point (comma-separated for several).
//! Never set it in production.

use std::sync::OnceLock;

/// Right after a transaction that changed levels committed, before anything else sees it
/// (the outbox relay is not woken, Redis is not written, the message is not acked).
pub const AFTER_COMMIT_BEFORE_CACHE: &str = "after_commit_before_cache";

fn armed() -> &'static [String] {
    static ARMED: OnceLock<Vec<String>> = OnceLock::new();
    ARMED.get_or_init(|| {
        std::env::var("OMNISTOCK_FAILPOINT")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect())
            .unwrap_or_default()
    })
}

/// Aborts the process, as `kill -9` would, when `name` is armed.
pub fn crash_if_armed(name: &str) {
    if armed().iter().any(|a| a == name) {
        eprintln!("omnistock: fail point {name} armed; aborting");
        std::process::abort();
    }
}

/// Adds a route that panics (`GET /failpoint/panic`), to show that a panic while answering a
/// request becomes a 500 with the standard body.
pub const HTTP_PANIC: &str = "http_panic";

/// Whether `name` is armed (for fail points that change behaviour rather than crash).
pub fn is_armed(name: &str) -> bool {
    armed().iter().any(|a| a == name)
}
