//! Promises on stock: reservations (holds) and order routing, both checked against what is
//! available under the level's row lock.

pub mod group;
mod queue;
pub mod reservations;
pub mod route_group;
pub mod routing;
mod takes;
