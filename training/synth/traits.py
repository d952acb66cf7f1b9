"""Real shops' exports, synthesised: order lines with paid prices and none of the planning files.

``traits_export`` turns the catalogue's daily demand into what a shop actually sends: order lines
(one or more per SKU and day, the price paid on each) and a product list, with no price,
promotion or event files and no stock flags. On top of the catalogue's own launches,
discontinued SKUs and stock-outs it adds the traits that broke forecasts on real exports: one
year of history, a closure week (the whole shop sold nothing), frequent stock-out runs and a few
bulk orders far outside a SKU's usual quantities. ``facts`` counts each trait, so a test (and
the benchmark's notes) can show it is there.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.synth.catalogue import SynthConfig, rng_stream

# A year ending with February: the closure week (24-30 December) then sits inside the training
# history of a 28-day hold-out and in the last 56 days before its cut-off.
TRAITS_END = dt.date(2026, 2, 28)
CLOSURE = (dt.date(2025, 12, 24), 7)  # first day, days
PRODUCT_EXPORT_COLUMNS = ("sku", "name", "item_id", "department", "category", "brand", "store")


@dataclass
class TraitsExport:
    """What a shop sends (products, order lines: "products"/"orders" entity columns) and the
    count of each trait in it."""

    products: pd.DataFrame
    order_lines: pd.DataFrame
    facts: dict[str, Any]
    config: SynthConfig


def traits_config(
    n_skus: int = 400, *, seed: int = 11, end: dt.date = TRAITS_END, n_days: int = 365
) -> SynthConfig:
    """The preset: one year, stock-outs every ~60 days per SKU, more launches and endings."""
    return SynthConfig(
        n_skus=n_skus,
        n_days=n_days,
        end=end,
        seed=seed,
        stockout_every_days=60.0,
        share_launch=0.15,
        share_discontinued=0.12,
    )


def _runs(flags: np.ndarray) -> int:
    """Number of runs of True in a boolean (n, t) matrix, counted along each row."""
    padded = np.concatenate([np.zeros((flags.shape[0], 1), dtype=bool), flags], axis=1)
    return int(np.count_nonzero(padded[:, 1:] & ~padded[:, :-1]))


def _lines(sales: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Each SKU-day's units split over 1..units order lines of at least one unit each."""
    units = sales["units"].to_numpy(dtype=np.int64)
    n_lines = 1 + rng.binomial(units - 1, 0.6)
    row = np.repeat(np.arange(len(sales)), n_lines)
    qty = np.ones(len(row), dtype=np.int64)
    extra = units - n_lines  # units beyond one per line, given to the day's lines at random
    first = np.cumsum(n_lines) - n_lines
    owner = np.repeat(np.arange(len(sales)), extra)
    pick = first[owner] + (rng.random(len(owner)) * n_lines[owner]).astype(np.int64)
    np.add.at(qty, pick, 1)
    seconds = rng.integers(8 * 3600, 20 * 3600, len(row))
    day = sales["date"].to_numpy().astype("datetime64[s]")[row]
    return pd.DataFrame(
        {
            "sku": sales["sku"].to_numpy(dtype=object)[row],
            "ordered_at": day + seconds.astype("timedelta64[s]"),
            "quantity": qty.astype(np.float64),
            "unit_price": sales["avg_price"].to_numpy(dtype=np.float64)[row],
        }
    )


def traits_export(config: SynthConfig | None = None) -> TraitsExport:
    """Order lines and products of the traits preset (deterministic for a given config)."""
    from training.synth import generate

    cfg = config or traits_config()
    cat = generate(cfg)
    rng = rng_stream(cfg.seed, 40)
    sales = cat.sales.copy()
    sales["date"] = pd.to_datetime(sales["date"])
    days = pd.date_range(cfg.first_day(), cfg.last_day(), freq="D")
    # Closure: the whole shop sold nothing (in a real export: no lines at all).
    close_from, close_days = CLOSURE
    closed = pd.date_range(close_from, periods=close_days, freq="D")
    closed = closed[(closed >= days[0]) & (closed <= days[-1])]
    sales.loc[sales["date"].isin(closed), "units"] = 0
    # Stock-outs (the catalogue's, not flagged in the export): runs of days off the shelf.
    live = sales.pivot(index="sku", columns="date", values="in_stock")
    stockout_runs = _runs(~live.fillna(True).to_numpy(dtype=bool))
    sold = sales[sales["units"] > 0].reset_index(drop=True)
    lines = _lines(sold, rng)
    # Bulk orders: a few lines of 30-60x a regular SKU's mean daily units, on ordinary days.
    means = sales.groupby("sku")["units"].mean()
    regular = means[means >= 1.0].index.to_numpy(dtype=object)
    n_bulk = max(3, cfg.n_skus // 40) if len(regular) else 0
    bulk_rows = sold[sold["sku"].isin(regular)].sample(n=n_bulk, random_state=cfg.seed)
    bulk = pd.DataFrame(
        {
            "sku": bulk_rows["sku"].to_numpy(dtype=object),
            "ordered_at": bulk_rows["date"].to_numpy().astype("datetime64[s]")
            + np.timedelta64(12 * 3600, "s"),
            "quantity": np.ceil(
                means.loc[bulk_rows["sku"]].to_numpy() * rng.uniform(30, 60, n_bulk)
            ),
            "unit_price": bulk_rows["avg_price"].to_numpy(dtype=np.float64),
        }
    )
    lines = pd.concat([lines, bulk], ignore_index=True)
    lines = lines.sort_values(["ordered_at", "sku"], kind="stable", ignore_index=True)
    lines.insert(0, "order_id", [f"T{i:09d}" for i in range(1, len(lines) + 1)])
    lines.insert(1, "line", np.ones(len(lines), dtype=np.int64))
    lines["ordered_at"] = pd.to_datetime(lines["ordered_at"]).dt.tz_localize("UTC")
    lines["sku"] = lines["sku"].astype("str")
    products = cat.products[list(PRODUCT_EXPORT_COLUMNS)].copy()
    first_sale = sold.groupby("sku")["date"].min()
    last_sale = sold.groupby("sku")["date"].max()
    facts = {
        "SKUs": cfg.n_skus,
        "days": cfg.n_days,
        "order lines": len(lines),
        "closure days": len(closed),
        "stock-out runs": stockout_runs,
        "bulk lines": n_bulk,
        "launched SKUs": int((first_sale > days[0] + pd.Timedelta(days=28)).sum()),
        "discontinued SKUs": int((last_sale < days[-1] - pd.Timedelta(days=28)).sum()),
        "price files": 0,
    }
    return TraitsExport(products, lines, facts, dataclasses.replace(cfg))
