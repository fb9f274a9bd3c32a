-- Network and channel totals per SKU, kept at write time (src/db/totals.rs).
--
-- A read of many SKUs (a category page) must not sum every level of every location: each
-- (SKU, channel) has its total here, changed in the transaction of the level that changed it.
-- Statement-level triggers on stock_levels add (contribution after - contribution before) per
-- SKU and channel, so every writer (ingest, holds, routing, supply, import) keeps the totals right
-- without code of its own. A change of a location's terms, of a channel or of an override
-- recomputes what it affects, set-based.
--
-- Sums are kept exact in numeric (levels may each be near the bigint limit; a saturated running
-- sum could not be decremented again) and shown saturated as bigint.

-- What a level makes available: max(0, on_hand - reserved - safety_stock), exactly
-- (src/domain/availability.rs `available`).
CREATE FUNCTION omni_available(on_hand bigint, reserved bigint, safety_stock bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT greatest(0, on_hand::numeric - reserved - safety_stock) $$;

-- A channel's share of a location's available (src/domain/channel.rs `pool_available`).
CREATE FUNCTION omni_pool(a numeric, buffer_units bigint, max_percent bigint, enabled boolean)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT CASE WHEN NOT enabled THEN 0::numeric ELSE
       greatest(0, least(greatest(a, 0) - greatest(buffer_units, 0),
                         div(greatest(a, 0) * least(greatest(max_percent, 0), 100), 100)))
   END $$;

-- Whether a channel sells from a location (src/domain/channel.rs `ChannelDef::includes`).
CREATE FUNCTION omni_includes(selector text, location_ids text[], location_id text, kind text,
                              ship_from boolean)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT CASE selector
       WHEN 'all' THEN true
       WHEN 'ship_from' THEN ship_from OR kind IN ('warehouse', 'online')
       ELSE location_id = ANY(location_ids)
   END $$;

CREATE TABLE sku_totals (
    sku         text NOT NULL,
    channel     text NOT NULL,
    -- Sum over the channel's locations of its share there (what the channel may promise).
    exact       numeric NOT NULL DEFAULT 0,
    -- Sum over the channel's locations of their available before the channel's share (the
    -- network alerts watch this for `online`).
    gross_exact numeric NOT NULL DEFAULT 0,
    available   bigint GENERATED ALWAYS AS (least(exact, 9223372036854775807)::int8) STORED,
    gross       bigint GENERATED ALWAYS AS (least(gross_exact, 9223372036854775807)::int8) STORED,
    -- Grows by one per change; the cache keeps the highest it has seen.
    version     bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (sku, channel)
);

-- The level triggers add signed contributions of their transition tables. Totals rows are taken
-- in (sku, channel) order, so statements writing disjoint levels of the same SKUs do not deadlock
-- on them.
CREATE FUNCTION sku_totals_from_levels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO sku_totals AS t (sku, channel, exact, gross_exact)
        SELECT d.sku, d.channel, d.da, d.dg FROM (
            SELECT r.sku, c.channel,
                   sum(omni_pool(x.a, coalesce(o.buffer_units, c.buffer_units),
                                 coalesce(o.max_percent, c.max_percent),
                                 coalesce(o.enabled, true))) AS da,
                   sum(x.a) AS dg
            FROM new_levels r
            JOIN locations l ON l.location_id = r.location_id
            CROSS JOIN LATERAL (SELECT omni_available(r.on_hand, r.reserved, l.safety_stock) AS a) x
            JOIN channels c ON omni_includes(c.selector, c.location_ids, r.location_id, l.kind, l.ship_from)
            LEFT JOIN channel_skus o ON o.channel = c.channel AND o.sku = r.sku
            GROUP BY r.sku, c.channel
        ) d
        WHERE d.da <> 0 OR d.dg <> 0
        ORDER BY d.sku, d.channel
        ON CONFLICT (sku, channel) DO UPDATE
            SET exact = t.exact + EXCLUDED.exact, gross_exact = t.gross_exact + EXCLUDED.gross_exact,
                version = t.version + 1;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO sku_totals AS t (sku, channel, exact, gross_exact)
        SELECT d.sku, d.channel, d.da, d.dg FROM (
            SELECT r.sku, c.channel,
                   sum(r.sign * omni_pool(x.a, coalesce(o.buffer_units, c.buffer_units),
                                          coalesce(o.max_percent, c.max_percent),
                                          coalesce(o.enabled, true))) AS da,
                   sum(r.sign * x.a) AS dg
            FROM (
                SELECT n.location_id, n.sku, n.on_hand, n.reserved, 1 AS sign FROM new_levels n
                UNION ALL
                SELECT o.location_id, o.sku, o.on_hand, o.reserved, -1 FROM old_levels o
            ) r
            JOIN locations l ON l.location_id = r.location_id
            CROSS JOIN LATERAL (SELECT omni_available(r.on_hand, r.reserved, l.safety_stock) AS a) x
            JOIN channels c ON omni_includes(c.selector, c.location_ids, r.location_id, l.kind, l.ship_from)
            LEFT JOIN channel_skus o ON o.channel = c.channel AND o.sku = r.sku
            GROUP BY r.sku, c.channel
        ) d
        WHERE d.da <> 0 OR d.dg <> 0
        ORDER BY d.sku, d.channel
        ON CONFLICT (sku, channel) DO UPDATE
            SET exact = t.exact + EXCLUDED.exact, gross_exact = t.gross_exact + EXCLUDED.gross_exact,
                version = t.version + 1;
    ELSE
        INSERT INTO sku_totals AS t (sku, channel, exact, gross_exact)
        SELECT d.sku, d.channel, -d.da, -d.dg FROM (
            SELECT r.sku, c.channel,
                   sum(omni_pool(x.a, coalesce(o.buffer_units, c.buffer_units),
                                 coalesce(o.max_percent, c.max_percent),
                                 coalesce(o.enabled, true))) AS da,
                   sum(x.a) AS dg
            FROM old_levels r
            JOIN locations l ON l.location_id = r.location_id
            CROSS JOIN LATERAL (SELECT omni_available(r.on_hand, r.reserved, l.safety_stock) AS a) x
            JOIN channels c ON omni_includes(c.selector, c.location_ids, r.location_id, l.kind, l.ship_from)
            LEFT JOIN channel_skus o ON o.channel = c.channel AND o.sku = r.sku
            GROUP BY r.sku, c.channel
        ) d
        WHERE d.da <> 0 OR d.dg <> 0
        ORDER BY d.sku, d.channel
        ON CONFLICT (sku, channel) DO UPDATE
            SET exact = t.exact + EXCLUDED.exact, gross_exact = t.gross_exact + EXCLUDED.gross_exact,
                version = t.version + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER stock_levels_totals_insert AFTER INSERT ON stock_levels
    REFERENCING NEW TABLE AS new_levels
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_levels();
CREATE TRIGGER stock_levels_totals_update AFTER UPDATE ON stock_levels
    REFERENCING OLD TABLE AS old_levels NEW TABLE AS new_levels
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_levels();
CREATE TRIGGER stock_levels_totals_delete AFTER DELETE ON stock_levels
    REFERENCING OLD TABLE AS old_levels
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_levels();

-- Recomputes the totals of these channels for these SKUs (all SKUs when `skus` is NULL) from
-- the levels. Level writers are held off meanwhile (SHARE conflicts with their ROW EXCLUSIVE):
-- a level change committing during the sum would otherwise be added to a total the sum then
-- overwrites. The statements below run after the lock, so they see every committed level.
CREATE FUNCTION sku_totals_recompute(channels_in text[], skus text[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
BEGIN
    LOCK TABLE stock_levels IN SHARE MODE;
    WITH fresh AS (
        SELECT s.sku, c.channel,
               sum(omni_pool(x.a, coalesce(o.buffer_units, c.buffer_units),
                             coalesce(o.max_percent, c.max_percent),
                             coalesce(o.enabled, true))) AS exact,
               sum(x.a) AS gross_exact
        FROM stock_levels s
        JOIN locations l ON l.location_id = s.location_id
        CROSS JOIN LATERAL (SELECT omni_available(s.on_hand, s.reserved, l.safety_stock) AS a) x
        JOIN channels c ON c.channel = ANY(channels_in)
             AND omni_includes(c.selector, c.location_ids, s.location_id, l.kind, l.ship_from)
        LEFT JOIN channel_skus o ON o.channel = c.channel AND o.sku = s.sku
        WHERE skus IS NULL OR s.sku = ANY(skus)
        GROUP BY s.sku, c.channel
    ), wanted AS (
        SELECT f.sku, f.channel, f.exact, f.gross_exact FROM fresh f
        UNION ALL
        -- Totals that no level feeds any more are 0.
        SELECT t.sku, t.channel, 0, 0 FROM sku_totals t
        WHERE t.channel = ANY(channels_in)
          AND (skus IS NULL OR t.sku = ANY(skus))
          AND (t.exact <> 0 OR t.gross_exact <> 0)
          AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.sku = t.sku AND f.channel = t.channel)
    ), upserted AS (
        INSERT INTO sku_totals AS t (sku, channel, exact, gross_exact)
        SELECT sku, channel, exact, gross_exact FROM wanted ORDER BY sku, channel
        ON CONFLICT (sku, channel) DO UPDATE
            SET exact = EXCLUDED.exact, gross_exact = EXCLUDED.gross_exact, version = t.version + 1
            WHERE (t.exact, t.gross_exact) IS DISTINCT FROM (EXCLUDED.exact, EXCLUDED.gross_exact)
        RETURNING 1
    )
    SELECT count(*) INTO changed FROM upserted;
    RETURN changed;
END $$;

-- A location's safety stock, kind or ship flag changed: each of its levels now contributes
-- differently. Adds (contribution with the new terms - with the old) for its levels only.
CREATE FUNCTION sku_totals_from_locations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM old_locations o JOIN new_locations n ON n.location_id = o.location_id
        WHERE (o.safety_stock, o.kind, o.ship_from) IS DISTINCT FROM (n.safety_stock, n.kind, n.ship_from)
    ) THEN
        RETURN NULL;
    END IF;
    LOCK TABLE stock_levels IN SHARE MODE;
    INSERT INTO sku_totals AS t (sku, channel, exact, gross_exact)
    SELECT d.sku, d.channel, d.da, d.dg FROM (
        SELECT s.sku, c.channel,
               sum(ch.sign * omni_pool(x.a, coalesce(o.buffer_units, c.buffer_units),
                                       coalesce(o.max_percent, c.max_percent),
                                       coalesce(o.enabled, true))) AS da,
               sum(ch.sign * x.a) AS dg
        FROM (
            SELECT n.location_id, n.safety_stock, n.kind, n.ship_from, 1 AS sign
            FROM new_locations n JOIN old_locations o ON o.location_id = n.location_id
            WHERE (o.safety_stock, o.kind, o.ship_from) IS DISTINCT FROM (n.safety_stock, n.kind, n.ship_from)
            UNION ALL
            SELECT o.location_id, o.safety_stock, o.kind, o.ship_from, -1
            FROM new_locations n JOIN old_locations o ON o.location_id = n.location_id
            WHERE (o.safety_stock, o.kind, o.ship_from) IS DISTINCT FROM (n.safety_stock, n.kind, n.ship_from)
        ) ch
        JOIN stock_levels s ON s.location_id = ch.location_id
        CROSS JOIN LATERAL (SELECT omni_available(s.on_hand, s.reserved, ch.safety_stock) AS a) x
        JOIN channels c ON omni_includes(c.selector, c.location_ids, s.location_id, ch.kind, ch.ship_from)
        LEFT JOIN channel_skus o ON o.channel = c.channel AND o.sku = s.sku
        GROUP BY s.sku, c.channel
    ) d
    WHERE d.da <> 0 OR d.dg <> 0
    ORDER BY d.sku, d.channel
    ON CONFLICT (sku, channel) DO UPDATE
        SET exact = t.exact + EXCLUDED.exact, gross_exact = t.gross_exact + EXCLUDED.gross_exact,
            version = t.version + 1;
    RETURN NULL;
END $$;

CREATE TRIGGER locations_totals AFTER UPDATE ON locations
    REFERENCING OLD TABLE AS old_locations NEW TABLE AS new_locations
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_locations();

-- A channel was defined or its terms changed: its totals are recomputed for every SKU.
CREATE FUNCTION sku_totals_from_channels() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    affected text[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(channel) INTO affected FROM new_channels;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(n.channel) INTO affected
        FROM new_channels n JOIN old_channels o ON o.channel = n.channel
        WHERE (o.selector, o.location_ids, o.buffer_units, o.max_percent)
              IS DISTINCT FROM (n.selector, n.location_ids, n.buffer_units, n.max_percent);
    ELSE
        SELECT array_agg(channel) INTO affected FROM old_channels;
    END IF;
    IF affected IS NOT NULL THEN
        PERFORM sku_totals_recompute(affected, NULL);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER channels_totals_insert AFTER INSERT ON channels
    REFERENCING NEW TABLE AS new_channels
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_channels();
CREATE TRIGGER channels_totals_update AFTER UPDATE ON channels
    REFERENCING OLD TABLE AS old_channels NEW TABLE AS new_channels
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_channels();
CREATE TRIGGER channels_totals_delete AFTER DELETE ON channels
    REFERENCING OLD TABLE AS old_channels
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_channels();

-- A per-SKU override changed: the totals of that (channel, SKU) are recomputed.
CREATE FUNCTION sku_totals_from_overrides() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ch text;
    affected text[];
BEGIN
    FOR ch, affected IN
        SELECT p.channel, array_agg(DISTINCT p.sku) FROM (
            SELECT channel, sku FROM new_overrides
            UNION ALL SELECT channel, sku FROM old_overrides
        ) p GROUP BY p.channel ORDER BY p.channel
    LOOP
        PERFORM sku_totals_recompute(ARRAY[ch], affected);
    END LOOP;
    RETURN NULL;
END $$;

-- An INSERT has no old table and a DELETE no new one: each gets an empty stand-in.
CREATE FUNCTION sku_totals_from_override_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ch text;
    affected text[];
BEGIN
    FOR ch, affected IN
        SELECT channel, array_agg(DISTINCT sku) FROM new_overrides GROUP BY channel ORDER BY channel
    LOOP
        PERFORM sku_totals_recompute(ARRAY[ch], affected);
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION sku_totals_from_override_deletes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ch text;
    affected text[];
BEGIN
    FOR ch, affected IN
        SELECT channel, array_agg(DISTINCT sku) FROM old_overrides GROUP BY channel ORDER BY channel
    LOOP
        PERFORM sku_totals_recompute(ARRAY[ch], affected);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER channel_skus_totals_insert AFTER INSERT ON channel_skus
    REFERENCING NEW TABLE AS new_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_override_inserts();
CREATE TRIGGER channel_skus_totals_update AFTER UPDATE ON channel_skus
    REFERENCING OLD TABLE AS old_overrides NEW TABLE AS new_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_overrides();
CREATE TRIGGER channel_skus_totals_delete AFTER DELETE ON channel_skus
    REFERENCING OLD TABLE AS old_overrides
    FOR EACH STATEMENT EXECUTE FUNCTION sku_totals_from_override_deletes();

-- The totals of what is there already.
SELECT sku_totals_recompute(ARRAY(SELECT channel FROM channels), NULL);
