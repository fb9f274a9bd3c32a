-- Future supply (expected receipts, transfers in transit) and the preorders held against it.
--
-- Every change to the supply lines of a (location, SKU) is made with that level row locked
-- (lock order: reservations, levels, supply lines), so the level lock serialises preorders,
-- fills and cancellations of one (location, SKU).

CREATE TABLE supply_lines (
    supply_id   text PRIMARY KEY,
    location_id text NOT NULL REFERENCES locations (location_id),
    sku         text NOT NULL REFERENCES skus (sku),
    -- What is expected in total.
    quantity    bigint NOT NULL CHECK (quantity > 0),
    -- What receipts / transfer_ins carrying this supply_id brought so far.
    received    bigint NOT NULL DEFAULT 0 CHECK (received >= 0),
    -- Still expected: quantity - received while open, never below 0; 0 once cancelled.
    remaining   bigint NOT NULL CHECK (remaining >= 0),
    -- Of `remaining`, what preorders hold (the sum of its preorder_allocations).
    allocated   bigint NOT NULL DEFAULT 0 CHECK (allocated >= 0 AND allocated <= remaining),
    -- NULL only for a transfer whose arrival is not known.
    expected_at timestamptz,
    status      text NOT NULL CHECK (status IN ('open', 'cancelled', 'filled')),
    source      text NOT NULL CHECK (source IN ('purchase', 'transfer')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'open' OR allocated = 0),
    CHECK (expected_at IS NOT NULL OR source = 'transfer')
);
CREATE INDEX supply_lines_open ON supply_lines (location_id, sku, expected_at)
    WHERE status = 'open';
CREATE INDEX supply_lines_sku ON supply_lines (sku) WHERE status = 'open';

ALTER TABLE reservations ADD COLUMN preorder boolean NOT NULL DEFAULT false;
-- What a preorder line waits for on supply that has not arrived (not in `reserved`).
ALTER TABLE reservation_lines ADD COLUMN waiting bigint NOT NULL DEFAULT 0
    CHECK (waiting >= 0 AND held + waiting <= quantity);

-- Preorder holds per supply line; `id` orders them (oldest first) when the supply arrives.
CREATE TABLE preorder_allocations (
    id             bigserial PRIMARY KEY,
    reservation_id text NOT NULL REFERENCES reservations (reservation_id),
    sku            text NOT NULL,
    supply_id      text NOT NULL REFERENCES supply_lines (supply_id),
    quantity       bigint NOT NULL CHECK (quantity > 0),
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (reservation_id, sku, supply_id)
);
CREATE INDEX preorder_allocations_supply ON preorder_allocations (supply_id, id);

-- The supply line a receipt / transfer_in named, and what became of the link.
ALTER TABLE movements ADD COLUMN supply_id text;
ALTER TABLE movements ADD COLUMN supply_outcome text
    CHECK (supply_outcome IN ('filled', 'unknown_supply', 'other_level', 'not_open'));
