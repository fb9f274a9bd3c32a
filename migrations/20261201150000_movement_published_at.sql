-- When a movement was published: the JetStream message's publish time, or when its
-- POST /v1/movements request came in. NULL for imported opening counts and for rows recorded
-- before this column existed. The ops summary's publish-to-commit delay is taken over it.
ALTER TABLE movements ADD COLUMN published_at timestamptz;

-- The summary reads each location's newest published movements. Partial, so rows without a
-- publish time (imports, the whole ledger before this migration) are never scanned for it;
-- empty when created, so it builds with one pass over the ledger.
CREATE INDEX movements_location_published ON movements (location_id, id DESC)
    WHERE published_at IS NOT NULL;
