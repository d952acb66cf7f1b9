"""Shelf prices and promotions of the synthetic catalogue: permanent price changes, markdowns and
clearance per SKU, SKU promotions in 14-day slots and quarterly category-wide sales."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from training.synth.catalogue import Array, SynthConfig, rng_stream

PROMO_DEPTHS = np.array([0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5])
PROMO_DEPTH_P = np.array([0.18, 0.2, 0.22, 0.15, 0.13, 0.08, 0.04])
PROMO_SLOT = 14  # SKU promotions start at most once per slot, so they never overlap
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


def take_names(names: pa.Array, idx: Array) -> pd.api.extensions.ExtensionArray:
    """names[idx] as a pandas string array, without a Python object per row."""
    return pd.array(names.take(pa.array(idx)), dtype="str")


def step_matrix(n: int, t: int, rows: Array, cols: Array, vals: Array) -> Array:
    """Cumulative sum of step changes at (row, col) into an (n, t) matrix (cols >= t ignored)."""
    delta = np.zeros((n, t + 1))
    keep = cols < t
    np.add.at(delta, (rows[keep], cols[keep]), vals[keep])
    return np.cumsum(delta[:, :t], axis=1)


def events_per_row(rng: np.random.Generator, n: int, rate: float | Array) -> Array:
    """Row indices of Poisson-many events per row."""
    counts = rng.poisson(np.broadcast_to(np.asarray(rate, dtype=np.float64), (n,)))
    return np.repeat(np.arange(n), counts)


def shelf_prices(
    rng: np.random.Generator, base_price: Array, launch: Array, stop: Array, t_all: int, t_hist: int
) -> Array:
    """Shelf price per SKU and day: permanent changes (drifting up), temporary markdowns and a
    clearance before a discontinuation."""
    n = len(launch)
    rows = events_per_row(rng, n, t_all / 240)
    cols = rng.integers(1, t_all, len(rows))
    vals = rng.normal(0.03, 0.06, len(rows))
    md_rows = events_per_row(rng, n, t_all / 320)
    md_start = rng.integers(1, t_all, len(md_rows))
    md_len = rng.integers(7, 29, len(md_rows))
    md = np.log1p(-rng.uniform(0.15, 0.35, len(md_rows)))
    disc = np.flatnonzero(stop < t_hist)
    clearance = np.maximum(stop[disc] - rng.integers(14, 36, len(disc)), launch[disc] + 1)
    log_price = np.log(base_price)[:, None] + step_matrix(
        n,
        t_all,
        np.concatenate([rows, md_rows, md_rows, disc]),
        np.concatenate([cols, md_start, md_start + md_len, clearance]),
        np.concatenate([vals, md, -md, np.log1p(-rng.uniform(0.3, 0.5, len(disc)))]),
    )
    price = np.maximum(np.round(np.exp(log_price), 2), 0.05)
    return price


@dataclass
class SkuPromotions:
    """A block's SKU promotions (one entry each) and every SKU-day's promotion state (SKUs x days,
    category-wide sales included)."""

    row: Array
    start: Array
    days: Array
    depth: Array
    display: Array
    mailer: Array
    depth_by_day: Array
    display_by_day: Array
    mailer_by_day: Array


def sku_promotions(
    rng: np.random.Generator,
    promo_rate: Array,
    category: Array,
    launch: Array,
    stop: Array,
    t_all: int,
    t_hist: int,
    category_promos: dict[str, tuple[Array, Array, Array]],
) -> SkuPromotions:
    """At most one promotion per 14-day slot, 3-10 days long, some planned in the future."""
    n = len(launch)
    n_slots = math.ceil(t_all / PROMO_SLOT)
    has = rng.random((n, n_slots)) < promo_rate[:, None]
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
    cats = category
    for cat, (c_depth, c_disp, c_mail) in category_promos.items():
        rows_c = cats == cat
        depth_m[rows_c] = np.maximum(depth_m[rows_c], c_depth)
        disp_m[rows_c] |= c_disp
        mail_m[rows_c] |= c_mail
    return SkuPromotions(pr, start, dur, depth, display, mailer, depth_m, disp_m, mail_m)


def price_rows(
    price: Array, launch: Array, stop: Array, t_hist: int, block_skus: pa.Array, d0: np.datetime64
) -> pd.DataFrame:
    """The first listed day's price and every change while listed (future ones included)."""
    n, t_all = price.shape
    changed = np.zeros((n, t_all), dtype=bool)
    changed[:, 1:] = price[:, 1:] != price[:, :-1]
    ti = np.arange(t_all)[None, :]
    listed = (ti >= launch[:, None]) & ((ti < stop[:, None]) | (stop[:, None] >= t_hist))
    changed |= ti == launch[:, None]
    pr_r, pr_c = np.nonzero(changed & listed)
    prices = pd.DataFrame(
        {
            "sku": take_names(block_skus, pr_r),
            "valid_from": (d0 + pr_c.astype("timedelta64[D]")).astype("datetime64[s]"),
            "price": price[pr_r, pr_c],
        }
    )
    return prices


def promotion_rows(
    promos: SkuPromotions, sku: Array, category: Array, block_skus: pa.Array, d0: np.datetime64
) -> pd.DataFrame:
    """The block's SKU promotions as rows of the promotions entity, by SKU and start."""
    pr, start, dur = promos.row, promos.start, promos.days
    depth, display, mailer = promos.depth, promos.display, promos.mailer
    order = np.lexsort((start, pr))
    pr, start, dur, depth, display, mailer = (
        a[order] for a in (pr, start, dur, depth, display, mailer)
    )
    skus = sku[pr]
    seq = np.arange(len(pr)) - np.searchsorted(pr, pr)
    promotions = pd.DataFrame(
        {
            "promo_id": pd.array(
                [f"PR-{s}-{q:03d}" for s, q in zip(skus, seq, strict=True)], dtype="str"
            ),
            "sku": take_names(block_skus, pr),
            "category": take_names(pa.array(list(category)), pr),
            "start_date": (d0 + start.astype("timedelta64[D]")).astype("datetime64[s]"),
            "end_date": (d0 + (start + dur - 1).astype("timedelta64[D]")).astype("datetime64[s]"),
            "kind": pd.array(["discount"] * len(pr), dtype="str"),
            "discount_depth": depth,
            "display": display,
            "mailer": mailer,
        }
    )
    return promotions


def category_promotions(
    cfg: SynthConfig, days: pd.DatetimeIndex, categories: Sequence[str]
) -> tuple[dict[str, tuple[Array, Array, Array]], pd.DataFrame]:
    """A category-wide sale about every quarter (e.g. 15% off GARDEN for a week)."""
    rng = rng_stream(cfg.seed, 3)
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
