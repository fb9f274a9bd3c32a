-- GET /v1/movements reads the ledger newest first (by id) for one SKU or one location.
CREATE INDEX movements_sku_history ON movements (sku, id DESC);
CREATE INDEX movements_location_history ON movements (location_id, id DESC);
