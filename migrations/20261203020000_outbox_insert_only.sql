-- The outbox becomes insert-only: no row is updated after its insert. The relay and the cache
-- sync each keep their position in `outbox_cursors` (one row each, updated once per batch;
-- see src/events/cursor.rs), and the cleanup deletes the id range both are past.
CREATE TABLE outbox_cursors (
    name      text PRIMARY KEY,
    -- Highest outbox id handled.
    seen_to   bigint NOT NULL,
    -- Id ranges below seen_to not seen yet (transactions still open, or rolled back), and the
    -- xmax of the snapshot that found each missing.
    gap_lo    bigint[] NOT NULL DEFAULT '{}',
    gap_hi    bigint[] NOT NULL DEFAULT '{}',
    gap_xmax  bigint[] NOT NULL DEFAULT '{}',
    -- Every id up to it is handled or will never appear: what the cleanup may delete.
    done_to   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Start each reader just before its first unmarked row (rows after it already marked are
-- handled again: events may repeat, never get lost; JetStream drops repeats within its
-- duplicate window by Nats-Msg-Id, and the cache write is versioned).
INSERT INTO outbox_cursors (name, seen_to, done_to)
SELECT 'relay', p, p FROM (
    SELECT COALESCE((SELECT min(id) - 1 FROM outbox WHERE sent_at IS NULL),
                    (SELECT max(id) FROM outbox), 0) AS p) s;
INSERT INTO outbox_cursors (name, seen_to, done_to)
SELECT 'cache_sync', p, p FROM (
    SELECT COALESCE((SELECT min(id) - 1 FROM outbox WHERE cached_at IS NULL),
                    (SELECT max(id) FROM outbox), 0) AS p) s;

DROP INDEX outbox_unsent;
DROP INDEX outbox_uncached;
ALTER TABLE outbox DROP COLUMN sent_at, DROP COLUMN cached_at;
