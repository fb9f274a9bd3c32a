//! Promises on stock: reservations (holds) and order routing, both checked against what is
//! available under the level's row lock.

pub mod group;
pub mod reservations;
pub mod routing;
