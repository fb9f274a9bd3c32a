-- The channel feed reads the last published totals by SKU (`WHERE sku = ANY(...)`). Keyed
-- (channel, sku), no index could serve that, so every read scanned the whole table: every SKU
-- of every channel (4,850 rows on the demo data, 150,000 on 50,000 SKUs), once per relay batch.
-- Keyed (sku, channel) the read is an index lookup; `ON CONFLICT (channel, sku)` still finds the
-- key (inference matches the set of columns, not their order).
ALTER TABLE channel_published DROP CONSTRAINT channel_published_pkey;
ALTER TABLE channel_published ADD PRIMARY KEY (sku, channel);
