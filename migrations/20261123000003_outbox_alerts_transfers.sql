-- Events out (transactional outbox), stock alert thresholds and state, transfers in transit.

-- Every committed change event and alert, written in the transaction of the change, published
-- by the relay (which marks them sent). `subject` is relative to the subject prefix.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    subject    text NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;

-- Low-stock thresholds: a SKU's own wins over its location's, which wins over the default.
ALTER TABLE locations ADD COLUMN low_stock_threshold bigint CHECK (low_stock_threshold >= 0);
ALTER TABLE skus ADD COLUMN low_stock_threshold bigint CHECK (low_stock_threshold >= 0);

-- The network (online channel) state last alerted per SKU: out, low or ok. Locked while a
-- transaction decides whether its change crossed a threshold, so each crossing alerts once.
CREATE TABLE network_alert_state (
    sku   text PRIMARY KEY,
    state text NOT NULL CHECK (state IN ('out', 'low', 'ok'))
);

-- Incoming stock: what a transfer_out shipped and the transfer_in has not received yet.
ALTER TABLE stock_levels ADD COLUMN in_transit bigint NOT NULL DEFAULT 0 CHECK (in_transit >= 0);

CREATE TABLE transfers (
    transfer_id      text NOT NULL,
    sku              text NOT NULL,
    from_location_id text,
    to_location_id   text,
    shipped          bigint NOT NULL DEFAULT 0,
    received         bigint NOT NULL DEFAULT 0,
    -- Which level's in_transit currently counts this transfer, and how much of it.
    accounted_to     text,
    accounted        bigint NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (transfer_id, sku)
);

ALTER TABLE movements ADD COLUMN transfer_id text;
ALTER TABLE movements ADD COLUMN to_location_id text;
