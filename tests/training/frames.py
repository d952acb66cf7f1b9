"""Small canonical frames (HISTORY_COLUMNS / PRODUCT_COLUMNS) for feature tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from featurestore.schema import HISTORY_COLUMNS, PRODUCT_COLUMNS


def make_products(
    skus: Sequence[str],
    *,
    departments: Sequence[str] = ("FOODS_1", "HOBBIES_1"),
    stores: Sequence[str] = ("CA_1", "TX_1"),
    launch: Sequence[pd.Timestamp | None] | None = None,
) -> pd.DataFrame:
    """A products frame: departments and stores cycle over ``skus``; category = department stem."""
    n = len(skus)
    dept = [departments[i % len(departments)] for i in range(n)]
    frame = pd.DataFrame(
        {
            "sku": list(skus),
            "item_id": [s.rsplit("_", 1)[0] for s in skus],
            "department": dept,
            "category": [d.split("_")[0] for d in dept],
            "brand": [None] * n,
            "store": [stores[(i // len(departments)) % len(stores)] for i in range(n)],
            "region": ["CA"] * n,
            "launch_date": pd.Series(list(launch) if launch else [None] * n, dtype="M8[ns]"),
            "first_sale_date": pd.Series([None] * n, dtype="M8[ns]"),
            "last_sale_date": pd.Series([None] * n, dtype="M8[ns]"),
            "status": ["active"] * n,
        }
    )
    return frame[list(PRODUCT_COLUMNS)]


def make_history(
    n_skus: int = 3,
    n_days: int = 120,
    *,
    seed: int = 0,
    start: str = "2024-01-01",
    offsets: Sequence[int] | None = None,
    fractional: bool = False,
) -> pd.DataFrame:
    """A dense history frame: intermittent Poisson-ish units, stepped prices, promotions, events.

    SKU ``i`` starts ``offsets[i]`` days after ``start`` (default: all on ``start``); every SKU
    ends on the same day. ``fractional`` gives non-integer units (exercises float summation).
    """
    rng = np.random.default_rng(seed)
    offsets = list(offsets) if offsets is not None else [0] * n_skus
    first = pd.Timestamp(start)
    end = first + pd.Timedelta(days=n_days - 1)
    parts = []
    for i in range(n_skus):
        dates = pd.date_range(first + pd.Timedelta(days=offsets[i]), end, freq="D")
        k = len(dates)
        rate = rng.uniform(0.2, 4.0)
        sold = rng.random(k) > rng.uniform(0.0, 0.6)
        units = (rng.poisson(rate, k) * sold).astype(np.float64)
        if fractional:
            units = units * rng.uniform(0.5, 1.5, k)
        promo = (rng.random(k) < 0.1).astype(np.int8)
        base = rng.uniform(1.0, 10.0) * np.cumprod(np.where(rng.random(k) < 0.03, 1.1, 1.0))
        price = base * np.where(promo == 1, 0.8, 1.0)
        event = (rng.random(k) < 0.05).astype(np.int8)
        parts.append(
            pd.DataFrame(
                {
                    "sku": f"ITEM_{i}_S",
                    "date": dates,
                    "units": units,
                    "price": price,
                    "on_promotion": promo,
                    "promo_depth": np.where(promo == 1, 0.2, 0.0),
                    "promo_display": promo * (rng.random(k) < 0.5),
                    "promo_mailer": promo * (rng.random(k) < 0.5),
                    "is_holiday": event * (rng.random(k) < 0.5),
                    "is_event": event,
                    "is_snap": (dates.day <= 10).astype(np.int8),
                    "days_to_event": rng.integers(0, 60, k),
                    "days_since_event": rng.integers(0, 60, k),
                }
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    return as_history(frame)


def as_history(frame: pd.DataFrame) -> pd.DataFrame:
    """Cast to HISTORY_COLUMNS dtypes, sorted by (sku, date) with a RangeIndex."""
    out = frame[list(HISTORY_COLUMNS)].astype(
        {c: t for c, t in HISTORY_COLUMNS.items() if c not in ("sku", "date")}
    )
    out["date"] = pd.to_datetime(out["date"]).astype("datetime64[ns]")
    return out.sort_values(["sku", "date"], kind="stable").reset_index(drop=True)


def serving_frame(
    history: pd.DataFrame, origin: pd.Timestamp, horizon: int, n_days: int
) -> pd.DataFrame:
    """What serving reads at ``origin``: n_days before origin+1, units NaN after origin."""
    first = origin + pd.Timedelta(days=1) - pd.Timedelta(days=n_days)
    last = origin + pd.Timedelta(days=horizon)
    out = history[(history["date"] >= first) & (history["date"] <= last)].copy()
    out.loc[out["date"] > origin, "units"] = np.nan
    return out.reset_index(drop=True)


def with_closure_and_stock_out() -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp, str]:
    """Eight busy SKUs in two stores; store CA_1 closed on one day of the last fold's window
    (all its SKUs sold nothing) and one TX_1 SKU flagged out of stock on another."""
    history = make_history(n_skus=8, n_days=200, seed=11)
    history["units"] = history["units"] * 10 + 5  # every store day sells plenty
    products = make_products(sorted(history["sku"].unique()))
    store_of = dict(zip(products["sku"], products["store"], strict=True))
    closed_day = history["date"].max() - pd.Timedelta(days=3)
    in_ca = history["sku"].map(store_of).eq("CA_1")
    history.loc[in_ca & history["date"].eq(closed_day), "units"] = 0.0
    out_sku = sorted(s for s, st in store_of.items() if st == "TX_1")[0]
    history["stock_out"] = (
        history["sku"].eq(out_sku) & history["date"].eq(closed_day - pd.Timedelta(days=2))
    ).astype("int8")
    return history, products, closed_day, out_sku
