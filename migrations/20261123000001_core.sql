-- Core schema: locations, SKUs, stock levels and the movement ledger.
-- Quantities are bigint: a network-wide sum of int4 quantities can overflow.

CREATE TABLE locations (
    location_id          text PRIMARY KEY CHECK (location_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name                 text NOT NULL,
    kind                 text NOT NULL CHECK (kind IN ('store', 'warehouse', 'online')),
    lat                  double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon                  double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    pickup               boolean NOT NULL DEFAULT false,
    ship_from            boolean NOT NULL DEFAULT false,
    safety_stock         bigint NOT NULL DEFAULT 0 CHECK (safety_stock >= 0),
    daily_order_capacity bigint CHECK (daily_order_capacity >= 0),
    timezone             text NOT NULL DEFAULT 'UTC',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The catalogue need not be preloaded: a movement for an unknown SKU creates it.
CREATE TABLE skus (
    sku        text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE stock_levels (
    location_id      text NOT NULL REFERENCES locations (location_id),
    sku              text NOT NULL REFERENCES skus (sku),
    on_hand          bigint NOT NULL DEFAULT 0,
    reserved         bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    -- Grows by one per change of on_hand or reserved; the cache and change events order by it.
    version          bigint NOT NULL DEFAULT 0,
    -- occurred_at of the latest count applied: deltas at or before it are late.
    last_count_at    timestamptz,
    -- occurred_at of the newest movement recorded, whatever its effect.
    last_movement_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (location_id, sku)
);
CREATE INDEX stock_levels_sku ON stock_levels (sku);

-- The ledger: every accepted movement, exactly once (event_id is unique), with what it did.
CREATE TABLE movements (
    id              bigserial PRIMARY KEY,
    event_id        text NOT NULL UNIQUE,
    location_id     text NOT NULL,
    sku             text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('receipt', 'sale', 'return', 'transfer_out',
                                                  'transfer_in', 'damage', 'adjustment', 'count')),
    quantity        bigint NOT NULL,
    -- Signed change the kind implies (NULL for a count, which sets on-hand instead).
    signed_quantity bigint,
    -- What it actually did to on_hand, and why (applied, late, stale_count).
    effect          bigint NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('applied', 'late', 'stale_count')),
    on_hand_after   bigint NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    source          text,
    reference       text,
    reservation_id  text,
    CHECK ((kind = 'count') = (signed_quantity IS NULL)),
    FOREIGN KEY (location_id, sku) REFERENCES stock_levels (location_id, sku)
);
CREATE INDEX movements_level_time ON movements (location_id, sku, occurred_at);
