-- Room on every page for a level's next version. Levels and totals are updated far more than
-- they are inserted (every movement, hold and route rewrites its level and its SKU's totals),
-- and none of their indexed columns change. With full pages (fillfactor 100) a new version
-- went to another page: one new entry in each of the table's indexes per update, and the
-- index clean-up that follows. With free room on the page the update is HOT (heap-only): no
-- index entry at all. Measured on ingest of the demo data: 36 % of level updates were HOT
-- before, 95 % after, 15-20 % less CPU per movement (docs/profiles.md, "Ingest").
--
-- Pages written from now on keep the room; pages already full get it back as their rows move.
-- `VACUUM FULL stock_levels, sku_totals` (an exclusive lock while it rewrites them) gives it
-- to all at once.
ALTER TABLE stock_levels SET (fillfactor = 70);
ALTER TABLE sku_totals SET (fillfactor = 70);
