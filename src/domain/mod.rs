//! Pure types and rules of inventory: no IO here, so every rule can be unit- and property-tested
//! without a server. Adapters (`db`, `cache`, `ingest`, `http`) stay thin around these functions.

pub mod alerts;
pub mod availability;
pub mod channel;
pub mod geo;
pub mod ids;
pub mod level;
pub mod location;
pub mod movement;
pub mod ops;
pub mod reservation;
pub mod reservation_page;
pub mod routing;
pub mod supply;
pub mod transfer;
