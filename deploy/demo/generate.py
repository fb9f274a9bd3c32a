#!/usr/bin/env python3
"""Generate the omnistock Taiwan retail demo data set.

Reads  tw_cities.csv  (next to this script)
Writes locations.csv and stock.csv (next to this script)

Python 3 standard library only. All randomness comes from one
random.Random instance with a fixed seed, nothing depends on the clock,
the environment or set/dict hash order, so running it twice produces
byte-identical files.

Usage: python3 deploy/demo/generate.py
"""

import csv
import math
import os
import random

SEED = 20261101
COUNTED_AT = "2026-11-01T00:00:00Z"
TIMEZONE = "Asia/Taipei"

HERE = os.path.dirname(os.path.abspath(__file__))
CITIES_CSV = os.path.join(HERE, "tw_cities.csv")
LOCATIONS_CSV = os.path.join(HERE, "locations.csv")
STOCK_CSV = os.path.join(HERE, "stock.csv")

LOCATION_HEADER = [
    "location_id", "name", "kind", "lat", "lon", "pickup", "ship_from",
    "safety_stock", "daily_order_capacity", "timezone",
]
STOCK_HEADER = ["location_id", "sku", "on_hand", "counted_at"]

# Extra stores: a second one above this population, a third above the next.
SECOND_STORE_POP = 1_000_000
THIRD_STORE_POP = 2_500_000
EXTRA_SUFFIXES = ["B", "C"]
JITTER_MIN_KM = 0.5
JITTER_MAX_KM = 3.0
KM_PER_DEG_LAT = 111.32

# The first stores of the N most populous cities ship orders (about a third
# of all stores).
SHIP_FROM_STORE_COUNT = 13
STORE_CAPACITY_MIN = 20
STORE_CAPACITY_MAX = 200

WAREHOUSE = {
    "location_id": "WH-TPE", "name": "Taoyuan DC", "lat": 24.95, "lon": 121.22,
}
ESHOP_ID = "ESHOP"
ESHOP_NAME = "Online shop"
ESHOP_CITY_ID = "TW001"  # Taipei: the e-shop uses its coordinates

# Assortment ---------------------------------------------------------------
# style code -> number of styles; sized styles come in SIZES, the others OS.
SIZED_STYLES = [
    ("TEE", 10), ("POLO", 10), ("SHIRT", 10), ("HOOD", 10), ("SWTR", 10),
    ("JEAN", 10), ("CHINO", 10), ("SHORT", 10), ("DRESS", 10), ("SKIRT", 10),
    ("JKT", 10),
]
ONE_SIZE_STYLES = [("SOCK", 12), ("CAP", 12), ("BELT", 12), ("SCARF", 12)]
SIZES = ["XS", "S", "M", "L", "XL"]
ONE_SIZE = "OS"
COLOURS = [
    "BLK", "WHT", "NVY", "GRY", "RED", "BLU", "GRN", "BEI", "BRN", "OLV",
    "PNK", "YEL",
]
COLOURS_PER_STYLE = (3, 5)  # inclusive range
# SKUs with spaces, slashes and dots (the contract allows any printable
# characters); kept free of commas and quotes so the CSV needs no quoting.
SPECIAL_SKUS = [
    "GIFT CARD/500",
    "GIFT CARD/1000",
    "GIFT CARD/2000",
    "BAG.TOTE-001",
    "BAG.TOTE-002",
    "BAG.BACKPACK-001",
    "LACES 120CM/BLK",
    "LACES 120CM/WHT",
    "GIFT WRAP",
    "SOCK-3PK/M.L",
]

# Stock levels ---------------------------------------------------------------
WAREHOUSE_QTY = (20, 400)
STORE_ASSORTMENT_SHARE = (0.30, 0.40)  # each store carries ~35% of SKUs
# on_hand 0..12 for store rows, skewed towards small counts.
STORE_QTY_WEIGHTS = [6, 14, 16, 14, 12, 10, 8, 6, 5, 4, 3, 2, 2]
ESHOP_ASSORTMENT_SHARE = 0.10
ESHOP_QTY_MAX = 30


def read_cities():
    with open(CITIES_CSV, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cities = []
    for r in rows:
        cities.append({
            "id": r["location_id"].strip(),
            "name": r["name"].strip(),
            "lat": float(r["lat"]),
            "lon": float(r["lon"]),
            "population": int(r["population"]),
        })
    cities.sort(key=lambda c: c["id"])
    return cities


def jitter(rng, lat, lon):
    """Move (lat, lon) by JITTER_MIN_KM..JITTER_MAX_KM in a random direction."""
    dist = rng.uniform(JITTER_MIN_KM, JITTER_MAX_KM)
    bearing = rng.uniform(0.0, 2.0 * math.pi)
    dlat = dist * math.cos(bearing) / KM_PER_DEG_LAT
    dlon = dist * math.sin(bearing) / (KM_PER_DEG_LAT * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def store_capacity(pop, pop_min, pop_max):
    """20..200 orders/day, on a log scale of city population, multiple of 10."""
    if pop_max == pop_min:
        return STORE_CAPACITY_MAX
    t = (math.log(pop) - math.log(pop_min)) / (math.log(pop_max) - math.log(pop_min))
    cap = STORE_CAPACITY_MIN + t * (STORE_CAPACITY_MAX - STORE_CAPACITY_MIN)
    cap = int(round(cap / 10.0)) * 10
    return max(STORE_CAPACITY_MIN, min(STORE_CAPACITY_MAX, cap))


def build_locations(rng, cities):
    by_pop = sorted(cities, key=lambda c: (-c["population"], c["id"]))
    ship_cities = by_pop[:SHIP_FROM_STORE_COUNT]
    ship_ids = {c["id"] for c in ship_cities}
    pop_max = ship_cities[0]["population"]
    pop_min = ship_cities[-1]["population"]

    locations = []
    for c in cities:  # sorted by id
        ship = c["id"] in ship_ids
        locations.append({
            "location_id": c["id"],
            "name": c["name"] + " Store",
            "kind": "store",
            "lat": c["lat"],
            "lon": c["lon"],
            "pickup": True,
            "ship_from": ship,
            "safety_stock": 1 if ship else 0,
            "daily_order_capacity":
                store_capacity(c["population"], pop_min, pop_max) if ship else None,
        })
        extras = 0
        if c["population"] > SECOND_STORE_POP:
            extras += 1
        if c["population"] > THIRD_STORE_POP:
            extras += 1
        for suffix in EXTRA_SUFFIXES[:extras]:
            lat, lon = jitter(rng, c["lat"], c["lon"])
            locations.append({
                "location_id": "%s-%s" % (c["id"], suffix),
                "name": "%s Store %s" % (c["name"], suffix),
                "kind": "store",
                "lat": lat,
                "lon": lon,
                "pickup": True,
                "ship_from": False,
                "safety_stock": 0,
                "daily_order_capacity": None,
            })

    locations.append({
        "location_id": WAREHOUSE["location_id"],
        "name": WAREHOUSE["name"],
        "kind": "warehouse",
        "lat": WAREHOUSE["lat"],
        "lon": WAREHOUSE["lon"],
        "pickup": False,
        "ship_from": True,
        "safety_stock": 2,
        "daily_order_capacity": 5000,
    })
    taipei = next(c for c in cities if c["id"] == ESHOP_CITY_ID)
    locations.append({
        "location_id": ESHOP_ID,
        "name": ESHOP_NAME,
        "kind": "online",
        "lat": taipei["lat"],
        "lon": taipei["lon"],
        "pickup": False,
        "ship_from": True,
        "safety_stock": 0,
        "daily_order_capacity": None,
    })
    locations.sort(key=lambda l: l["location_id"])
    return locations


def build_skus(rng):
    skus = []

    def styles(code, count, sizes):
        numbers = sorted(rng.sample(range(1, 1000), count))
        for n in numbers:
            k = rng.randint(*COLOURS_PER_STYLE)
            colours = sorted(rng.sample(COLOURS, k), key=COLOURS.index)
            for colour in colours:
                for size in sizes:
                    skus.append("%s-%03d-%s-%s" % (code, n, colour, size))

    for code, count in SIZED_STYLES:
        styles(code, count, SIZES)
    for code, count in ONE_SIZE_STYLES:
        styles(code, count, [ONE_SIZE])
    skus.extend(SPECIAL_SKUS)
    if len(set(skus)) != len(skus):
        raise SystemExit("duplicate SKU generated")
    return sorted(skus)


def build_stock(rng, locations, skus):
    rows = []  # (location_id, sku, on_hand)
    store_qtys = list(range(len(STORE_QTY_WEIGHTS)))
    for loc in locations:  # sorted by location_id
        lid = loc["location_id"]
        if loc["kind"] == "warehouse":
            for sku in skus:
                rows.append((lid, sku, rng.randint(*WAREHOUSE_QTY)))
        elif loc["kind"] == "store":
            share = rng.uniform(*STORE_ASSORTMENT_SHARE)
            carried = sorted(rng.sample(skus, int(round(share * len(skus)))))
            qtys = rng.choices(store_qtys, weights=STORE_QTY_WEIGHTS, k=len(carried))
            rows.extend((lid, sku, q) for sku, q in zip(carried, qtys))
        elif loc["kind"] == "online":
            carried = sorted(rng.sample(skus, int(round(ESHOP_ASSORTMENT_SHARE * len(skus)))))
            for sku in carried:
                # 1..30, skewed low: the e-shop holds small consignments.
                q = 1 + int(rng.random() ** 2 * ESHOP_QTY_MAX)
                rows.append((lid, sku, min(q, ESHOP_QTY_MAX)))
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def fmt_bool(b):
    return "true" if b else "false"


def write_locations(locations):
    with open(LOCATIONS_CSV, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(LOCATION_HEADER)
        for l in locations:
            cap = l["daily_order_capacity"]
            w.writerow([
                l["location_id"],
                l["name"],
                l["kind"],
                "%.5f" % l["lat"],
                "%.5f" % l["lon"],
                fmt_bool(l["pickup"]),
                fmt_bool(l["ship_from"]),
                l["safety_stock"],
                "" if cap is None else cap,
                TIMEZONE,
            ])


def write_stock(rows):
    with open(STOCK_CSV, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(STOCK_HEADER)
        for lid, sku, q in rows:
            w.writerow([lid, sku, q, COUNTED_AT])


def main():
    rng = random.Random(SEED)
    cities = read_cities()
    locations = build_locations(rng, cities)
    skus = build_skus(rng)
    rows = build_stock(rng, locations, skus)
    write_locations(locations)
    write_stock(rows)
    stores = sum(1 for l in locations if l["kind"] == "store")
    print("locations.csv: %d locations (%d stores), stock.csv: %d rows, %d SKUs"
          % (len(locations), stores, len(rows), len(skus)))


if __name__ == "__main__":
    main()
