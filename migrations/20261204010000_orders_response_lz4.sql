-- A routed order's stored answer (kept for idempotent replays) explains every location
-- considered, so it is usually larger than the 2 kB at which PostgreSQL compresses a value;
-- pglz showed in the route profile (docs/profiles.md). lz4 compresses several times faster.
-- A server built without lz4 keeps pglz.
DO $$
BEGIN
    ALTER TABLE orders ALTER COLUMN response SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available; orders.response stays pglz-compressed';
END
$$;
