//! Checks of client-given ids shared by every handler, so the same mistake gets the same 422
//! whatever the endpoint.

use super::error::ApiError;
use crate::domain::ids::{is_valid_client_id, is_valid_location_id, is_valid_sku};

pub fn sku(field: &str, value: &str) -> Result<(), ApiError> {
    if is_valid_sku(value) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            "a SKU is 1-128 printable characters",
        ))
    }
}

pub fn location_id(field: &str, value: &str) -> Result<(), ApiError> {
    if is_valid_location_id(value) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("`{field}` must match [A-Za-z0-9_-]{{1,64}}"),
        ))
    }
}

/// Reservation and order ids: 1-128 printable characters.
pub fn client_id(field: &str, value: &str) -> Result<(), ApiError> {
    if is_valid_client_id(value) {
        Ok(())
    } else {
        Err(ApiError::field(
            field,
            format!("`{field}` must be 1-128 printable characters"),
        ))
    }
}
