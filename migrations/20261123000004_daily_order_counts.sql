-- Orders routed per location and local day, kept by the routing transaction itself, so the
-- capacity check reads one small row instead of counting every assignment of the day.
CREATE TABLE daily_order_counts (
    location_id text NOT NULL REFERENCES locations (location_id),
    local_date  date NOT NULL,
    orders      bigint NOT NULL CHECK (orders >= 0),
    PRIMARY KEY (location_id, local_date)
);

INSERT INTO daily_order_counts (location_id, local_date, orders)
SELECT location_id, local_date, count(*) FROM order_assignments GROUP BY 1, 2;
