//! Identifier rules from the contract. Ids are case-sensitive and never normalised.

/// Longest `event_id` (and other client-given ids) the contract accepts.
pub const MAX_EVENT_ID_LEN: usize = 128;
/// Longest SKU the contract accepts.
pub const MAX_SKU_LEN: usize = 128;
/// Longest location id the contract accepts.
pub const MAX_LOCATION_ID_LEN: usize = 64;

/// `location_id` matches `[A-Za-z0-9_-]{1,64}`: it is safe to put into a NATS subject token.
pub fn is_valid_location_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LOCATION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A SKU is 1–128 printable characters (spaces, `/` and `.` allowed; control characters not).
/// Length is counted in characters, not bytes, so non-ASCII catalogue codes are treated fairly.
pub fn is_valid_sku(sku: &str) -> bool {
    let n = sku.chars().count();
    (1..=MAX_SKU_LEN).contains(&n) && sku.chars().all(|c| !c.is_control())
}

/// Client-given ids (`event_id`, reservation and order ids): 1–128 printable characters.
pub fn is_valid_client_id(id: &str) -> bool {
    let n = id.chars().count();
    (1..=MAX_EVENT_ID_LEN).contains(&n) && id.chars().all(|c| !c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_ids() {
        assert!(is_valid_location_id("TW001"));
        assert!(is_valid_location_id("WH-TPE_2"));
        assert!(is_valid_location_id(&"a".repeat(64)));
        assert!(!is_valid_location_id(&"a".repeat(65)));
        assert!(!is_valid_location_id(""));
        assert!(!is_valid_location_id("TW.001"));
        assert!(!is_valid_location_id("TW 001"));
        assert!(!is_valid_location_id("TW>"));
        assert!(!is_valid_location_id("台北"));
    }

    #[test]
    fn skus() {
        assert!(is_valid_sku("TEE-RED-M"));
        assert!(is_valid_sku("GIFT CARD/500"));
        assert!(is_valid_sku("BAG.TOTE-001"));
        assert!(is_valid_sku("襯衫-紅-M"));
        assert!(is_valid_sku(&"x".repeat(128)));
        assert!(!is_valid_sku(&"x".repeat(129)));
        assert!(!is_valid_sku(""));
        assert!(!is_valid_sku("TEE\nRED"));
        assert!(!is_valid_sku("TEE\u{7f}"));
    }
}
