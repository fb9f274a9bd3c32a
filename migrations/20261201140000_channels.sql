-- Sales channel pools: which locations a channel sells from, and how much of their available
-- it may promise (src/domain/channel.rs). `all` and `online` are built in: their selector is
-- fixed, their buffer and percent may be set.
CREATE TABLE channels (
    channel      text PRIMARY KEY,
    -- `all`: every location; `ship_from`: locations that ship (ship_from, warehouses, the
    -- e-shop); `locations`: exactly `location_ids`.
    selector     text NOT NULL CHECK (selector IN ('all', 'ship_from', 'locations')),
    location_ids text[] NOT NULL DEFAULT '{}',
    buffer_units bigint NOT NULL DEFAULT 0 CHECK (buffer_units >= 0),
    max_percent  bigint NOT NULL DEFAULT 100 CHECK (max_percent BETWEEN 1 AND 100),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (selector = 'locations' OR location_ids = '{}'),
    CHECK (selector <> 'locations' OR cardinality(location_ids) > 0)
);
INSERT INTO channels (channel, selector) VALUES ('all', 'all'), ('online', 'ship_from');

-- Per-SKU overrides of a channel's terms; NULL = the channel's.
CREATE TABLE channel_skus (
    channel      text NOT NULL REFERENCES channels (channel),
    sku          text NOT NULL,
    buffer_units bigint CHECK (buffer_units >= 0),
    max_percent  bigint CHECK (max_percent BETWEEN 1 AND 100),
    enabled      boolean,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, sku)
);
CREATE INDEX channel_skus_by_sku ON channel_skus (sku);

-- The channel feed (src/channel_feed.rs): SKUs whose channel totals may have changed (written
-- by the outbox relay as it publishes their change events, and by channel and override
-- changes), and the total last published per (channel, SKU), so a total is published only
-- when it differs.
CREATE TABLE channel_dirty (
    sku       text PRIMARY KEY,
    marked_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE channel_published (
    channel      text NOT NULL,
    sku          text NOT NULL,
    available    bigint NOT NULL,
    seq          bigint NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel, sku)
);
