"""A realistic synthetic retail catalogue (demo data, tests, benchmarks), deterministic by seed.

Demand per SKU and day is a product of effects, then drawn from a negative binomial
(gamma-Poisson) so units are non-negative integers:

    level  x weekly profile (region, category)  x yearly season (category phase)
           x trend  x life cycle (launch ramp-up, fade before discontinuation)
           x holidays and events (region)  x (price / reference price) ** elasticity
           x promotion uplift ((1 - depth) ** elasticity, display, mailer)

Levels are log-normal across SKUs (a few fast movers, many slow ones); a share of SKUs are
intermittent slow movers (mostly zeros). Prices carry permanent changes, temporary markdowns and
clearance before discontinuation; some price changes and promotions are planned after the last
sales day. German stores close on Sundays and public holidays; everywhere sells next to nothing
on Christmas Day and peaks before it. Everything is numpy-vectorised over blocks of SKUs, and each
block has its own random stream, so a block's data does not depend on how the output is consumed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import holidays
import numpy as np
import pandas as pd
import pyarrow as pa
from sqlalchemy import Engine

from featurestore.calendar import sync_holidays
from featurestore.ingest import IngestReport, ingest_frames

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
PROMO_DEPTHS = np.array([0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5])
PROMO_DEPTH_P = np.array([0.18, 0.2, 0.22, 0.15, 0.13, 0.08, 0.04])
PROMO_SLOT = 14  # SKU promotions start at most once per slot, so they never overlap
BLOCK_SKUS = 512  # SKUs per random stream and per generated block
PROMO_COLUMNS = (
    "promo_id",
    "sku",
    "category",
    "start_date",
    "end_date",
    "kind",
    "discount_depth",
    "display",
    "mailer",
)


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


@dataclass
class SynthCatalogue:
    """Generated entities, with columns named as featurestore.schema.ENTITIES, ready to ingest."""

    products: pd.DataFrame
    sales: pd.DataFrame
    prices: pd.DataFrame
    promotions: pd.DataFrame
    events: pd.DataFrame
    config: SynthConfig = field(default_factory=SynthConfig)


@dataclass(frozen=True)
class _Skus:
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


def _rng(seed: int, stream: int, block: int = 0) -> np.random.Generator:
    return np.random.default_rng((seed, stream, block))


def _pick(rng: np.random.Generator, n: int, share: float, eligible: Array) -> Array:
    """Mark about share * n of the eligible positions (at least one when share > 0)."""
    out = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(eligible)
    k = min(len(idx), max(1 if share > 0 else 0, round(share * n)))
    if k:
        out[rng.choice(idx, size=k, replace=False)] = True
    return out


def _sku_params(cfg: SynthConfig) -> tuple[_Skus, pd.DataFrame]:
    """Draw every SKU's parameters and its product row (items are sold in every store)."""
    rng = _rng(cfg.seed, 1)
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
    params = _Skus(
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


def _days(cfg: SynthConfig) -> pd.DatetimeIndex:
    """Every day from the first sales day to the end of the planning horizon."""
    return pd.date_range(cfg.first_day(), periods=cfg.n_days + cfg.future_days, freq="D")


def _thanksgiving(year: int) -> dt.date:
    nov1 = dt.date(year, 11, 1)
    return nov1 + dt.timedelta(days=(3 - nov1.weekday()) % 7 + 21)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _custom_events(days: pd.DatetimeIndex) -> pd.DataFrame:
    """Paydays (first of the month, everywhere) and two sports finals (US, DE)."""
    years = range(days[0].year, days[-1].year + 1)
    rows: list[tuple[dt.date, str, str, str]] = [
        (d.date(), "Payday", "cultural", "") for d in days if d.day == 1
    ]
    for y in years:
        rows.append((_nth_weekday(y, 2, 6, 2), "Super Bowl", "sporting", "US"))
        rows.append((_last_weekday(y, 5, 5), "Cup Final", "sporting", "DE"))
    lo, hi = days[0].date(), days[-1].date()
    frame = pd.DataFrame(
        [r for r in rows if lo <= r[0] <= hi], columns=["date", "name", "kind", "region"]
    )
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[s]")
    for col in ("name", "kind", "region"):
        frame[col] = frame[col].astype("str")
    return frame.sort_values(["date", "name"], ignore_index=True)


def _calendar_effects(
    cfg: SynthConfig, days: pd.DatetimeIndex, categories: Sequence[str]
) -> dict[tuple[int, str], Array]:
    """Multiplicative day effects per (store index, category): holidays, Christmas, events."""
    years = list(range(days[0].year, days[-1].year + 1))
    dates = days.date
    month, dom = days.month.to_numpy(), days.day.to_numpy()
    dow = days.day_of_week.to_numpy()
    payday = np.ones(len(days))
    firsts = np.flatnonzero(dom == 1)
    for lag, lift in enumerate((1.12, 1.06, 1.03)):
        idx = firsts + lag
        payday[idx[idx < len(days)]] = lift
    xmas_run = np.where((month == 12) & (dom >= 10) & (dom <= 24), 1.0 + 0.045 * (dom - 9), 1.0)
    xmas_run = np.where((month == 12) & (dom == 24), 1.35, xmas_run)
    day_index = {d: i for i, d in enumerate(dates)}

    def at(d: dt.date) -> int | None:
        return day_index.get(d)

    out: dict[tuple[int, str], Array] = {}
    region_cache: dict[str, Array] = {}
    for s, (_store, region) in enumerate(cfg.stores):
        country, _, subdiv = region.partition("-")
        if region not in region_cache:
            public = holidays.country_holidays(country, subdiv=subdiv or None, years=years)
            is_holiday = np.array([d in public for d in dates])
            eff = np.where(is_holiday, 0.0 if country == "DE" else 0.9, 1.0)
            if country == "DE":
                eff = np.where(dow == 6, 0.0, eff)  # shops closed on Sundays
                eff = eff * np.where(dow == 5, 1.25, 1.0)  # ... so Saturdays are busier
            eff = eff * xmas_run * payday
            for y in years:
                closed_new_year = 0.0 if country == "DE" else 0.45
                for d, mult in ((dt.date(y, 12, 25), 0.02), (dt.date(y, 1, 1), closed_new_year)):
                    i = at(d)
                    if i is not None:
                        eff[i] = mult  # (nearly) closed, whatever else happens that day
                i = at(dt.date(y, 12, 31))
                if i is not None:
                    eff[i] *= 1.15
                if country == "US":
                    tg = _thanksgiving(y)
                    for d, mult in (
                        (tg, 0.3),
                        (tg + dt.timedelta(days=1), 1.9),
                        (tg - dt.timedelta(days=1), 1.3),
                    ):
                        i = at(d)
                        if i is not None:
                            eff[i] = mult
            region_cache[region] = eff
        base = region_cache[region]
        for cat in categories:
            eff = base.copy()
            if cat == "FOODS":  # snacks and drinks for the sports final and the eve before it
                for y in years:
                    final = _nth_weekday(y, 2, 6, 2) if country == "US" else _last_weekday(y, 5, 5)
                    i = at(final)
                    if i is not None:
                        eff[max(i - 1, 0) : i + 1] *= 1.5
            out[(s, cat)] = eff
    return out


def _weekly(cfg: SynthConfig, categories: Sequence[str]) -> dict[str, Array]:
    return {c: np.array(CATEGORY_WEEK[c]) / np.mean(CATEGORY_WEEK[c]) for c in categories}


def _take(names: pa.Array, idx: Array) -> pd.api.extensions.ExtensionArray:
    """names[idx] as a pandas string array, without a Python object per row."""
    return pd.array(names.take(pa.array(idx)), dtype="str")


def _steps(n: int, t: int, rows: Array, cols: Array, vals: Array) -> Array:
    """Cumulative sum of step changes at (row, col) into an (n, t) matrix (cols >= t ignored)."""
    delta = np.zeros((n, t + 1))
    keep = cols < t
    np.add.at(delta, (rows[keep], cols[keep]), vals[keep])
    return np.cumsum(delta[:, :t], axis=1)


def _events_per_row(rng: np.random.Generator, n: int, rate: float | Array) -> Array:
    """Row indices of Poisson-many events per row."""
    counts = rng.poisson(np.broadcast_to(np.asarray(rate, dtype=np.float64), (n,)))
    return np.repeat(np.arange(n), counts)


@dataclass
class _Block:
    sales: pd.DataFrame
    prices: pd.DataFrame
    promotions: pd.DataFrame


def _simulate(
    cfg: SynthConfig,
    p: _Skus,
    lo: int,
    hi: int,
    days: pd.DatetimeIndex,
    calendar: dict[tuple[int, str], Array],
    weekly: dict[str, Array],
    category_promos: dict[str, tuple[Array, Array, Array]],
) -> _Block:
    """Prices, promotions and daily sales of SKUs lo..hi-1 (one random stream per block)."""
    rng = _rng(cfg.seed, 2, lo // BLOCK_SKUS)
    n, t_all, t_hist = hi - lo, len(days), cfg.n_days
    sl = slice(lo, hi)
    launch, stop = p.launch[sl], p.stop[sl]
    block_skus = pa.array(list(p.sku[sl]), type=pa.string())
    elasticity = p.elasticity[sl][:, None]

    # shelf price: permanent changes (drifting up), temporary markdowns, clearance before exit
    rows = _events_per_row(rng, n, t_all / 240)
    cols = rng.integers(1, t_all, len(rows))
    vals = rng.normal(0.03, 0.06, len(rows))
    md_rows = _events_per_row(rng, n, t_all / 320)
    md_start = rng.integers(1, t_all, len(md_rows))
    md_len = rng.integers(7, 29, len(md_rows))
    md = np.log1p(-rng.uniform(0.15, 0.35, len(md_rows)))
    disc = np.flatnonzero(stop < t_hist)
    clearance = np.maximum(stop[disc] - rng.integers(14, 36, len(disc)), launch[disc] + 1)
    log_price = np.log(p.base_price[sl])[:, None] + _steps(
        n,
        t_all,
        np.concatenate([rows, md_rows, md_rows, disc]),
        np.concatenate([cols, md_start, md_start + md_len, clearance]),
        np.concatenate([vals, md, -md, np.log1p(-rng.uniform(0.3, 0.5, len(disc)))]),
    )
    price = np.maximum(np.round(np.exp(log_price), 2), 0.05)

    # SKU promotions: at most one per 14-day slot, 3-10 days long, some planned in the future
    n_slots = math.ceil(t_all / PROMO_SLOT)
    has = rng.random((n, n_slots)) < p.promo_rate[sl][:, None]
    pr, ps = np.nonzero(has)
    dur = rng.choice(np.array([3, 4, 5, 7, 7, 7, 10]), len(pr))
    start = ps * PROMO_SLOT + rng.integers(0, PROMO_SLOT - dur + 1)
    depth = rng.choice(PROMO_DEPTHS, len(pr), p=PROMO_DEPTH_P)
    display = rng.random(len(pr)) < 0.3
    mailer = rng.random(len(pr)) < 0.2
    alive = (start >= launch[pr]) & (start + dur <= stop[pr] + (stop[pr] >= t_hist) * t_all)
    alive &= start + dur <= t_all
    pr, start, dur, depth, display, mailer = (
        a[alive] for a in (pr, start, dur, depth, display, mailer)
    )
    depth_m = np.zeros((n, t_all))
    disp_m = np.zeros((n, t_all), dtype=bool)
    mail_m = np.zeros((n, t_all), dtype=bool)
    cell_r = np.repeat(pr, dur)
    cell_c = np.repeat(start, dur) + (np.arange(dur.sum()) - np.repeat(np.cumsum(dur) - dur, dur))
    depth_m[cell_r, cell_c] = np.repeat(depth, dur)
    disp_m[cell_r, cell_c] = np.repeat(display, dur)
    mail_m[cell_r, cell_c] = np.repeat(mailer, dur)
    cats = p.category[sl]
    for cat, (c_depth, c_disp, c_mail) in category_promos.items():
        rows_c = cats == cat
        depth_m[rows_c] = np.maximum(depth_m[rows_c], c_depth)
        disp_m[rows_c] |= c_disp
        mail_m[rows_c] |= c_mail

    # demand
    h = slice(0, t_hist)
    tt = np.arange(t_hist)
    doy = days[h].day_of_year.to_numpy()
    dow = days[h].day_of_week.to_numpy()
    mu = np.empty((n, t_hist))
    for i in range(n):  # per-row lookups are cheap; the heavy work below is vectorised
        j = lo + i
        mu[i] = weekly[p.category[j]][dow] * calendar[(int(p.store[j]), p.category[j])][h]
    mu *= p.level[sl][:, None]
    mu *= np.exp(
        p.season_amp[sl][:, None]
        * np.cos(2 * np.pi * (doy[None, :] - p.season_peak[sl][:, None]) / 365.25)
    )
    mu *= np.exp(p.trend[sl][:, None] * (tt[None, :] - t_hist) / 365.0)
    age = tt[None, :] - launch[:, None]
    mu *= np.where(
        launch[:, None] > 0, 1.0 - np.exp(-np.maximum(age + 1, 0) / p.ramp[sl][:, None]), 1.0
    )
    to_stop = stop[:, None] - tt[None, :]
    mu *= np.where(stop[:, None] < t_hist, np.clip(0.4 + 0.6 * to_stop / 90.0, 0.4, 1.0), 1.0)
    mu *= (price[:, h] / p.base_price[sl][:, None]) ** elasticity
    mu *= (
        (1.0 - depth_m[:, h]) ** elasticity * (1 + 0.35 * disp_m[:, h]) * (1 + 0.25 * mail_m[:, h])
    )
    k = p.dispersion[sl][:, None]
    lam = mu * rng.gamma(k, 1.0 / k, size=mu.shape)
    units = rng.poisson(lam)

    # stock-outs: runs of days with nothing on the shelf (not for intermittent SKUs)
    so_rows = _events_per_row(
        rng, n, np.where(p.intermittent[sl], 0.0, t_hist / cfg.stockout_every_days)
    )
    so_start = rng.integers(0, t_hist, len(so_rows))
    so_len = rng.integers(1, 7, len(so_rows))
    out = _steps(
        n,
        t_hist,
        np.concatenate([so_rows, so_rows]),
        np.concatenate([so_start, so_start + so_len]),
        np.concatenate([np.ones(len(so_rows)), -np.ones(len(so_rows))]),
    )
    in_stock = out < 0.5
    units = np.where(in_stock, units, 0)

    # long frames: sales only while the SKU is listed
    live = (tt[None, :] >= launch[:, None]) & (tt[None, :] < stop[:, None])
    r, c = np.nonzero(live)
    paid = price[:, h] * (1.0 - depth_m[:, h])
    u = units[r, c].astype(np.int64)
    ap = np.round(paid[r, c], 2)
    d0 = np.datetime64(days[0].date(), "D")
    sales = pd.DataFrame(
        {
            "sku": _take(block_skus, r),
            "date": (d0 + c.astype("timedelta64[D]")).astype("datetime64[s]"),
            "units": u,
            "revenue": np.round(u * ap, 2),
            "avg_price": ap,
            "on_promotion": depth_m[:, h][r, c] > 0,
            "in_stock": in_stock[r, c],
        }
    )

    # price rows: the first listed day and every change while listed (future ones included)
    changed = np.zeros((n, t_all), dtype=bool)
    changed[:, 1:] = price[:, 1:] != price[:, :-1]
    ti = np.arange(t_all)[None, :]
    listed = (ti >= launch[:, None]) & ((ti < stop[:, None]) | (stop[:, None] >= t_hist))
    changed |= ti == launch[:, None]
    pr_r, pr_c = np.nonzero(changed & listed)
    prices = pd.DataFrame(
        {
            "sku": _take(block_skus, pr_r),
            "valid_from": (d0 + pr_c.astype("timedelta64[D]")).astype("datetime64[s]"),
            "price": price[pr_r, pr_c],
        }
    )

    order = np.lexsort((start, pr))
    pr, start, dur, depth, display, mailer = (
        a[order] for a in (pr, start, dur, depth, display, mailer)
    )
    skus = p.sku[lo + pr]
    seq = np.arange(len(pr)) - np.searchsorted(pr, pr)
    promotions = pd.DataFrame(
        {
            "promo_id": pd.array(
                [f"PR-{s}-{q:03d}" for s, q in zip(skus, seq, strict=True)], dtype="str"
            ),
            "sku": _take(block_skus, pr),
            "category": _take(pa.array(list(p.category[sl])), pr),
            "start_date": (d0 + start.astype("timedelta64[D]")).astype("datetime64[s]"),
            "end_date": (d0 + (start + dur - 1).astype("timedelta64[D]")).astype("datetime64[s]"),
            "kind": pd.array(["discount"] * len(pr), dtype="str"),
            "discount_depth": depth,
            "display": display,
            "mailer": mailer,
        }
    )
    return _Block(sales, prices, promotions)


def _category_promos(
    cfg: SynthConfig, days: pd.DatetimeIndex, categories: Sequence[str]
) -> tuple[dict[str, tuple[Array, Array, Array]], pd.DataFrame]:
    """A category-wide sale about every quarter (e.g. 15% off GARDEN for a week)."""
    rng = _rng(cfg.seed, 3)
    t_all = len(days)
    d0 = np.datetime64(days[0].date(), "D")
    masks: dict[str, tuple[Array, Array, Array]] = {}
    rows: list[dict[str, Any]] = []
    for cat in sorted(categories):
        depth = np.zeros(t_all)
        disp = np.zeros(t_all, dtype=bool)
        mail = np.zeros(t_all, dtype=bool)
        for q, s in enumerate(range(int(rng.integers(0, 60)), t_all - 7, 91)):
            dur = int(rng.integers(5, 9))
            d = float(rng.choice([0.1, 0.15, 0.2]))
            depth[s : s + dur] = d
            mail[s : s + dur] = True
            rows.append(
                {
                    "promo_id": f"CAT-{cat}-{q:03d}",
                    "sku": None,
                    "category": cat,
                    "start_date": d0 + np.timedelta64(s, "D"),
                    "end_date": d0 + np.timedelta64(s + dur - 1, "D"),
                    "kind": "category_sale",
                    "discount_depth": d,
                    "display": False,
                    "mailer": True,
                }
            )
        masks[cat] = (depth, disp, mail)
    frame = pd.DataFrame(rows, columns=list(PROMO_COLUMNS))
    for col in ("start_date", "end_date"):
        frame[col] = frame[col].astype("datetime64[s]")
    return masks, frame


def _blocks(cfg: SynthConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Iterator[_Block]]:
    if cfg.n_skus < 1 or cfg.n_days < 1:
        raise ValueError("n_skus and n_days must be positive")
    params, products = _sku_params(cfg)
    days = _days(cfg)
    categories = sorted(set(params.category))
    calendar = _calendar_effects(cfg, days, categories)
    weekly = _weekly(cfg, categories)
    cat_masks, cat_promos = _category_promos(cfg, days, categories)

    def gen() -> Iterator[_Block]:
        for lo in range(0, cfg.n_skus, BLOCK_SKUS):
            hi = min(lo + BLOCK_SKUS, cfg.n_skus)
            yield _simulate(cfg, params, lo, hi, days, calendar, weekly, cat_masks)

    return products, _custom_events(days), cat_promos, gen()


def generate(config: SynthConfig | None = None) -> SynthCatalogue:
    """Generate a whole catalogue in memory (deterministic for a given config)."""
    cfg = config or SynthConfig()
    products, events, cat_promos, blocks = _blocks(cfg)
    parts = list(blocks)
    promotions = pd.concat([cat_promos, *(b.promotions for b in parts)], ignore_index=True)
    return SynthCatalogue(
        products=products,
        sales=pd.concat([b.sales for b in parts], ignore_index=True),
        prices=pd.concat([b.prices for b in parts], ignore_index=True),
        promotions=promotions,
        events=events,
        config=cfg,
    )


def iter_sales(config: SynthConfig) -> Iterator[pd.DataFrame]:
    """Daily sales block by block (512 SKUs each), for loads larger than memory."""
    _products, _events, _promos, blocks = _blocks(config)
    for block in blocks:
        yield block.sales


def iter_order_lines(
    n_lines: int,
    *,
    seed: int,
    skus: Sequence[str],
    start: dt.date,
    end: dt.date,
    chunk_rows: int = 500_000,
    first_order: int = 1,
) -> Iterator[pd.DataFrame]:
    """Synthetic order lines ("orders" entity columns) in chronological chunks.

    Orders are numbered from ``first_order``: files generated for consecutive periods with
    disjoint numbers hold distinct order lines (a store that appends them keeps every line).

    About 93% of orders are completed, 4% cancelled and 1% are return orders whose lines carry
    negative quantities; 3% of completed lines are returned (status "returned", quantity > 0).
    """
    if not skus:
        raise ValueError("skus must not be empty")
    sku_arr = np.asarray(list(skus), dtype=object)
    base = _rng(seed, 10)
    n_skus = len(sku_arr)
    popularity = 1.0 / (base.permutation(n_skus) + 5.0) ** 0.9
    popularity /= popularity.sum()
    sku_price = np.round(np.exp(base.normal(np.log(6.0), 0.7, n_skus)), 2)
    t0 = pd.Timestamp(start, tz="UTC").value // 1000  # microseconds
    t1 = (pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)).value // 1000
    n_chunks = max(math.ceil(n_lines / chunk_rows), 1)
    next_order = first_order
    for c in range(n_chunks):
        m = min(chunk_rows, n_lines - c * chunk_rows)
        if m <= 0:
            break
        rng = _rng(seed, 11, c)
        sizes = 1 + rng.poisson(1.5, m // 2 + 16)
        ends = np.cumsum(sizes)
        k = int(np.searchsorted(ends, m)) + 1
        sizes = sizes[:k]
        sizes[-1] -= ends[k - 1] - m
        order_no = next_order + np.arange(k)
        next_order += k
        order_of = np.repeat(np.arange(k), sizes)
        line = np.arange(m) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
        lo_t = t0 + (t1 - t0) * c // n_chunks
        hi_t = t0 + (t1 - t0) * (c + 1) // n_chunks
        at = np.sort(rng.integers(lo_t, hi_t, k))
        kind = rng.choice(3, size=k, p=[0.95, 0.04, 0.01])  # 0 sale, 1 cancelled, 2 return order
        qty = (1 + rng.poisson(0.4, m)).astype(np.float64)
        status = np.full(m, "completed", dtype=object)
        status[kind[order_of] == 1] = "cancelled"
        returned_line = (kind[order_of] == 0) & (rng.random(m) < 0.03)
        status[returned_line] = "returned"
        is_return = kind[order_of] == 2
        status[is_return] = "returned"
        qty[is_return] *= -1
        sku_idx = rng.choice(n_skus, size=m, p=popularity)
        discount = np.where(rng.random(m) < 0.15, rng.choice([0.05, 0.1, 0.2, 0.3], m), 0.0)
        prefix = np.where(kind == 2, "RT", "SO")
        order_ids = pd.Series(order_no).astype("str").str.zfill(10)
        order_ids = pd.Series(prefix, dtype="str") + order_ids
        customers = pd.Series(rng.integers(1, 250_000, k)).astype("str")
        yield pd.DataFrame(
            {
                "order_id": order_ids.to_numpy()[order_of],
                "line": line.astype(np.int64),
                "sku": pd.array(sku_arr[sku_idx], dtype="str"),
                "customer_id": ("C" + customers).to_numpy()[order_of],
                "ordered_at": pd.to_datetime(at[order_of], unit="us", utc=True),
                "quantity": qty,
                "unit_price": sku_price[sku_idx],
                "discount": discount,
                "status": pd.array(status, dtype="str"),
            }
        )


def write_catalogue(
    engine: Engine,
    cat: SynthCatalogue,
    progress: Callable[[str, IngestReport], None] | None = None,
    *,
    chunk_rows: int = 200_000,
) -> dict[str, IngestReport]:
    """Load a catalogue through the ordinary ingestion path, then sync public holidays."""
    source = f"synth:seed={cat.config.seed}:skus={cat.config.n_skus}:days={cat.config.n_days}"
    reports: dict[str, IngestReport] = {}
    for entity in ("products", "events", "prices", "promotions", "sales"):
        frame: pd.DataFrame = getattr(cat, entity)
        chunks = (frame.iloc[i : i + chunk_rows] for i in range(0, max(len(frame), 1), chunk_rows))
        report = ingest_frames(engine, entity, chunks, source=f"{source}:{entity}")
        reports[entity] = report
        if progress is not None:
            progress(entity, report)
    # the regions' public holidays over the sales window and a year beyond it
    sync_holidays(engine)
    return reports
