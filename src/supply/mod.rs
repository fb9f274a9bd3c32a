//! Future supply and preorders: supply lines (create/replace, list, cancel), preorder holds
//! against them, and their fill when a receipt or transfer_in names them.
//!
//! Concurrency: every change to the supply lines of a (location, SKU), and to the preorders on
//! them, is made with that level row locked first. Lock order, shared with the rest:
//! reservations (id order), levels ((location, SKU) order), supply lines. So a preorder, an
//! ordinary hold, a fill and a cancellation of one (location, SKU) run one after another, and
//! a preorder checks `available + free supply` under the same lock that guards both.

mod fills;
mod lines;
mod preorders;

pub use fills::{named_line, Fill, Fills, Link};
pub use lines::{
    cancel, expected_for, get, list, upsert, Cancel, Cancelled, NewSupply, SupplyView, Upserted,
};
pub use preorders::hold_preorder_in;
