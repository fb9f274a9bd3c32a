-- The cache sync (src/cache/sync.rs) writes every committed level change to Redis from the
-- outbox, so a change whose after-commit write was lost (crash, failed write) still reaches
-- Redis. `cached_at` marks the rows it has written; a row is deleted only once both sent and
-- cached.
ALTER TABLE outbox ADD COLUMN cached_at timestamptz;
CREATE INDEX outbox_uncached ON outbox (id) WHERE cached_at IS NULL;
