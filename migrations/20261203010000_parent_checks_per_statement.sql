-- The foreign keys of stock levels (to locations and SKUs) and of the ledger (to its level),
-- checked once per statement instead of once per row (issue 13, bulk import).
--
-- A row-level foreign key runs one query and takes one row lock (a WAL record) per inserted row:
-- three of each for every opening count of a bulk import, more than the rows' own writes cost.
-- The parents here are append-only: nothing deletes or truncates a location, a SKU or a level,
-- and their keys never change. That is enforced below, so a child row whose parent exists when
-- its statement ends stays valid for good, and one set-based anti-join per statement proves what
-- the per-row checks proved. The other references to locations and SKUs (holds, orders, supply,
-- order counts) keep their foreign keys: they are written row by row anyway.

ALTER TABLE stock_levels DROP CONSTRAINT stock_levels_location_id_fkey;
ALTER TABLE stock_levels DROP CONSTRAINT stock_levels_sku_fkey;
ALTER TABLE movements DROP CONSTRAINT movements_location_id_sku_fkey;

-- Parents are permanent: a row once referenced can never go away or change its key.
CREATE FUNCTION omni_refuse_parent_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: its rows are referenced and permanent', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation';
END $$;

CREATE TRIGGER locations_permanent BEFORE DELETE OR TRUNCATE ON locations
    FOR EACH STATEMENT EXECUTE FUNCTION omni_refuse_parent_change();
CREATE TRIGGER locations_key_fixed BEFORE UPDATE OF location_id ON locations
    FOR EACH ROW WHEN (OLD.location_id IS DISTINCT FROM NEW.location_id)
    EXECUTE FUNCTION omni_refuse_parent_change();
CREATE TRIGGER skus_permanent BEFORE DELETE OR TRUNCATE ON skus
    FOR EACH STATEMENT EXECUTE FUNCTION omni_refuse_parent_change();
CREATE TRIGGER skus_key_fixed BEFORE UPDATE OF sku ON skus
    FOR EACH ROW WHEN (OLD.sku IS DISTINCT FROM NEW.sku)
    EXECUTE FUNCTION omni_refuse_parent_change();
CREATE TRIGGER stock_levels_permanent BEFORE DELETE OR TRUNCATE ON stock_levels
    FOR EACH STATEMENT EXECUTE FUNCTION omni_refuse_parent_change();
CREATE TRIGGER stock_levels_key_fixed BEFORE UPDATE OF location_id, sku ON stock_levels
    FOR EACH ROW WHEN ((OLD.location_id, OLD.sku) IS DISTINCT FROM (NEW.location_id, NEW.sku))
    EXECUTE FUNCTION omni_refuse_parent_change();
CREATE TRIGGER movements_key_fixed BEFORE UPDATE OF location_id, sku ON movements
    FOR EACH ROW WHEN ((OLD.location_id, OLD.sku) IS DISTINCT FROM (NEW.location_id, NEW.sku))
    EXECUTE FUNCTION omni_refuse_parent_change();

-- New levels: their location and SKU exist. Both parents are small next to the levels, so the
-- anti-joins hash them.
CREATE FUNCTION stock_levels_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    loc text;
    s text;
BEGIN
    SELECT n.location_id, n.sku INTO loc, s FROM new_levels n
    WHERE NOT EXISTS (SELECT 1 FROM locations l WHERE l.location_id = n.location_id)
       OR NOT EXISTS (SELECT 1 FROM skus k WHERE k.sku = n.sku)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'stock level (%, %) references a location or SKU that does not exist', loc, s
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER stock_levels_parents AFTER INSERT ON stock_levels
    REFERENCING NEW TABLE AS new_levels
    FOR EACH STATEMENT EXECUTE FUNCTION stock_levels_parents_exist();

-- New ledger rows: their level exists. Probed through the levels' key (a hash of millions of
-- levels per statement would cost more than the probes), in key order.
CREATE FUNCTION movements_level_exists() RETURNS trigger LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
    loc text;
    s text;
BEGIN
    SELECT n.location_id, n.sku INTO loc, s FROM new_movements n
    WHERE NOT EXISTS (SELECT 1 FROM stock_levels l
                      WHERE l.location_id = n.location_id AND l.sku = n.sku)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger row for (%, %) has no stock level', loc, s
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER movements_level AFTER INSERT ON movements
    REFERENCING NEW TABLE AS new_movements
    FOR EACH STATEMENT EXECUTE FUNCTION movements_level_exists();
