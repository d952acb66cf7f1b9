"""The synthetic catalogue's products and per-SKU demand parameters: stores, categories, brands,
price levels, seasonality, intermittent slow movers, launches and discontinuations."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

Array = np.ndarray[Any, Any]

# (store, region): US stores in three states and one Bavarian store (closed Sundays and holidays).
STORES: tuple[tuple[str, str], ...] = (
    ("CA_1", "US-CA"),
    ("CA_2", "US-CA"),
    ("TX_1", "US-TX"),
    ("NY_1", "US-NY"),
    ("BY_1", "DE-BY"),
)

# category -> department -> product nouns
CATALOGUE: dict[str, dict[str, tuple[str, ...]]] = {
    "FOODS": {
        "FOODS_DRY": ("Granola", "Pasta", "Rice", "Oat Flakes", "Coffee Beans", "Tomato Sauce"),
        "FOODS_FRESH": ("Yoghurt", "Cheddar", "Sourdough", "Butter", "Hummus", "Orange Juice"),
        "FOODS_SNACKS": ("Tortilla Chips", "Pretzels", "Salted Peanuts", "Popcorn", "Cola"),
    },
    "HOUSEHOLD": {
        "HOUSEHOLD_CLEANING": ("Dish Soap", "Laundry Pods", "Glass Cleaner", "Sponges"),
        "HOUSEHOLD_KITCHEN": ("Frying Pan", "Storage Jars", "Tea Towels", "Chef Knife"),
    },
    "HOBBIES": {
        "HOBBIES_TOYS": ("Building Bricks", "Puzzle", "Board Game", "Plush Bear", "Kite"),
        "HOBBIES_CRAFTS": ("Watercolours", "Yarn", "Sketchbook", "Glue Gun"),
    },
    "GARDEN": {
        "GARDEN_OUTDOOR": ("Seed Mix", "Potting Soil", "Garden Hose", "Plant Food", "Trowel"),
    },
}
CATEGORY_WEIGHTS = {"FOODS": 0.45, "HOUSEHOLD": 0.22, "HOBBIES": 0.18, "GARDEN": 0.15}
BRANDS: dict[str, tuple[str, ...]] = {
    "FOODS": ("Harvest Lane", "Nordfeld", "Sunny Acres", "Crunchwell"),
    "HOUSEHOLD": ("Brightway", "Hausmann", "Kitchenly"),
    "HOBBIES": ("Playforge", "Craftory", "Tinker & Co"),
    "GARDEN": ("Greenthumb", "Bloomfield"),
}
# median shelf price, yearly seasonality amplitude (log scale) and peak day of year
CATEGORY_PRICE = {"FOODS": 3.5, "HOUSEHOLD": 7.0, "HOBBIES": 14.0, "GARDEN": 12.0}
CATEGORY_SEASON = {
    "FOODS": (0.08, 355),
    "HOUSEHOLD": (0.15, 85),
    "HOBBIES": (0.4, 352),
    "GARDEN": (0.75, 140),
}
# Monday..Sunday, relative (normalised to mean 1 below)
CATEGORY_WEEK = {
    "FOODS": (0.86, 0.82, 0.86, 0.93, 1.10, 1.35, 1.08),
    "HOUSEHOLD": (0.92, 0.88, 0.90, 0.95, 1.05, 1.25, 1.05),
    "HOBBIES": (0.80, 0.78, 0.80, 0.88, 1.05, 1.46, 1.23),
    "GARDEN": (0.76, 0.75, 0.80, 0.90, 1.10, 1.50, 1.19),
}


@dataclass(frozen=True)
class SynthConfig:
    """What to generate: catalogue size, history window and the shares of special SKUs."""

    n_skus: int = 120
    n_days: int = 730
    end: dt.date | None = None  # last sales day; default yesterday (UTC, so never "in the future")
    seed: int = 7
    stores: tuple[tuple[str, str], ...] = STORES
    future_days: int = 56  # planned prices, promotions and events after the last sales day
    share_intermittent: float = 0.3
    share_launch: float = 0.1
    share_discontinued: float = 0.08
    elasticity: tuple[float, float] = (-3.0, -1.5)
    promo_rate: tuple[float, float] = (0.05, 0.4)  # per-SKU chance of a promotion per 14 days
    stockout_every_days: float = 250.0

    def last_day(self) -> dt.date:
        """The last sales day."""
        if self.end is not None:
            return self.end
        return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)

    def first_day(self) -> dt.date:
        """The first sales day."""
        return self.last_day() - dt.timedelta(days=self.n_days - 1)


@dataclass(frozen=True)
class SkuParams:
    """Per-SKU parameters (arrays of length n_skus)."""

    sku: Array
    store: Array  # index into config.stores
    category: Array  # str
    department: Array  # str
    level: Array
    dispersion: Array
    intermittent: Array  # bool
    base_price: Array
    elasticity: Array
    season_amp: Array
    season_peak: Array
    trend: Array  # log change per year
    launch: Array  # first sales day index (0 unless launched mid-history)
    stop: Array  # first day without sales (n_days unless discontinued)
    ramp: Array  # launch ramp-up time constant, days
    promo_rate: Array


def rng_stream(seed: int, stream: int, block: int = 0) -> np.random.Generator:
    return np.random.default_rng((seed, stream, block))


def _pick(rng: np.random.Generator, n: int, share: float, eligible: Array) -> Array:
    """Mark about share * n of the eligible positions (at least one when share > 0)."""
    out = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(eligible)
    k = min(len(idx), max(1 if share > 0 else 0, round(share * n)))
    if k:
        out[rng.choice(idx, size=k, replace=False)] = True
    return out


def sku_params(cfg: SynthConfig) -> tuple[SkuParams, pd.DataFrame]:
    """Draw every SKU's parameters and its product row (items are sold in every store)."""
    rng = rng_stream(cfg.seed, 1)
    n, n_stores = cfg.n_skus, len(cfg.stores)
    n_items = math.ceil(n / n_stores)
    cats = list(CATALOGUE)
    item_cat = rng.choice(len(cats), size=n_items, p=[CATEGORY_WEIGHTS[c] for c in cats])
    item_category = np.array([cats[c] for c in item_cat], dtype=object)
    item_dept = np.empty(n_items, dtype=object)
    item_name = np.empty(n_items, dtype=object)
    item_brand = np.empty(n_items, dtype=object)
    item_price = np.empty(n_items)
    item_id = np.empty(n_items, dtype=object)
    counters: dict[str, int] = {}
    for i, cat in enumerate(item_category):
        depts = list(CATALOGUE[cat])
        dept = depts[rng.integers(len(depts))]
        nouns = CATALOGUE[cat][dept]
        brand = BRANDS[cat][rng.integers(len(BRANDS[cat]))]
        counters[dept] = counters.get(dept, 0) + 1
        item_dept[i] = dept
        item_brand[i] = brand
        item_id[i] = f"{dept}_{counters[dept]:03d}"
        item_name[i] = f"{brand} {nouns[rng.integers(len(nouns))]} #{counters[dept]}"
        item_price[i] = CATEGORY_PRICE[cat] * math.exp(rng.normal(0.0, 0.45))
    item_price = np.maximum(np.round(item_price, 1) - 0.01, 0.49)
    elasticity = rng.uniform(*cfg.elasticity, size=n_items)
    amp = np.array([CATEGORY_SEASON[c][0] for c in item_category]) * rng.uniform(0.7, 1.3, n_items)
    peak = np.array([CATEGORY_SEASON[c][1] for c in item_category]) + rng.normal(0, 10, n_items)
    item_popularity = rng.normal(0.0, 0.8, n_items)

    # Launches and discontinuations are item-level: an item arrives in (leaves) every store.
    launched = _pick(rng, n_items, cfg.share_launch, np.ones(n_items, dtype=bool))
    discontinued = _pick(rng, n_items, cfg.share_discontinued, ~launched)
    item_launch = np.where(
        launched, rng.integers(int(0.15 * cfg.n_days), max(int(0.8 * cfg.n_days), 1), n_items), 0
    )
    item_stop = np.where(
        discontinued,
        rng.integers(int(0.4 * cfg.n_days), max(int(0.92 * cfg.n_days), 1), n_items),
        cfg.n_days,
    )

    item = np.arange(n) // n_stores
    store = np.arange(n) % n_stores
    store_size = rng.uniform(0.6, 1.4, n_stores)
    intermittent = _pick(rng, n, cfg.share_intermittent, np.ones(n, dtype=bool))
    level = np.exp(np.log(2.5) + item_popularity[item] + rng.normal(0, 0.5, n)) * store_size[store]
    level = np.where(intermittent, rng.uniform(0.03, 0.35, n), level)
    dispersion = np.where(intermittent, rng.uniform(0.3, 1.0, n), rng.uniform(3.0, 20.0, n))
    launch = item_launch[item] + np.where(launched[item], rng.integers(0, 8, n), 0)
    launch = np.minimum(launch, cfg.n_days - 1)
    sku = np.array(
        [f"{item_id[i]}_{cfg.stores[s][0]}" for i, s in zip(item, store, strict=True)], dtype=object
    )
    params = SkuParams(
        sku=sku,
        store=store,
        category=item_category[item],
        department=item_dept[item],
        level=level,
        dispersion=dispersion,
        intermittent=intermittent,
        base_price=item_price[item],
        elasticity=elasticity[item],
        season_amp=amp[item],
        season_peak=peak[item],
        trend=rng.normal(0.02, 0.18, n),
        launch=launch,
        stop=item_stop[item],
        ramp=rng.uniform(10.0, 45.0, n),
        promo_rate=rng.uniform(*cfg.promo_rate, n) * np.where(intermittent, 0.4, 1.0),
    )
    first = cfg.first_day()
    launch_date = pd.Series(
        np.datetime64(first, "D") + launch.astype("timedelta64[D]"), dtype="datetime64[s]"
    )
    products = pd.DataFrame(
        {
            "sku": sku,
            "name": item_name[item],
            "item_id": item_id[item],
            "department": params.department,
            "category": params.category,
            "brand": item_brand[item],
            "store": [cfg.stores[s][0] for s in store],
            "region": [cfg.stores[s][1] for s in store],
            "launch_date": launch_date.where(launched[item]),
            "status": np.where(discontinued[item], "discontinued", "active"),
        }
    )
    for col in (
        "sku",
        "name",
        "item_id",
        "department",
        "category",
        "brand",
        "store",
        "region",
        "status",
    ):
        products[col] = products[col].astype("str")
    return params, products
