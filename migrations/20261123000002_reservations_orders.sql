-- Promises: reservations (holds) and routed orders.

CREATE TABLE reservations (
    reservation_id text PRIMARY KEY,
    location_id    text NOT NULL REFERENCES locations (location_id),
    status         text NOT NULL CHECK (status IN ('held', 'confirmed', 'fulfilled', 'released', 'expired')),
    -- NULL once confirmed: a confirmed hold no longer expires.
    expires_at     timestamptz,
    order_id       text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'held' OR expires_at IS NOT NULL)
);
-- The expiry sweep reads only live holds, oldest deadline first.
CREATE INDEX reservations_due ON reservations (expires_at) WHERE status = 'held';

CREATE TABLE reservation_lines (
    reservation_id text NOT NULL REFERENCES reservations (reservation_id),
    sku            text NOT NULL,
    quantity       bigint NOT NULL CHECK (quantity > 0),
    -- What is still held: sales carrying the reservation consume it, release/expiry zero it.
    held           bigint NOT NULL CHECK (held >= 0 AND held <= quantity),
    PRIMARY KEY (reservation_id, sku)
);

CREATE TABLE orders (
    order_id   text PRIMARY KEY,
    -- The answer given, returned again for the same order_id.
    response   jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_assignments (
    -- Deferred: the order's answer is stored last, once every assignment is held.
    order_id       text NOT NULL REFERENCES orders (order_id) DEFERRABLE INITIALLY DEFERRED,
    location_id    text NOT NULL REFERENCES locations (location_id),
    reservation_id text NOT NULL REFERENCES reservations (reservation_id),
    -- The location's own calendar day when routed: daily capacity counts these.
    local_date     date NOT NULL,
    PRIMARY KEY (order_id, location_id)
);
CREATE INDEX order_assignments_capacity ON order_assignments (location_id, local_date);
