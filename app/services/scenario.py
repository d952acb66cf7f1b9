"""What-if scenarios: planned prices and promotions written onto a window's future rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

import numpy as np
import pandas as pd

from app.errors import InvalidRequest
from app.schemas import Scenario


def check_scenario(
    scenario: Scenario, skus: Collection[str], first: dt.date, last: dt.date
) -> None:
    """Every change is for a requested SKU and touches the forecast window ``first..last``.

    A change wholly outside the window would change nothing (a delta of 0 that looks like an
    answer); a change that overlaps it applies to the days inside.
    """
    changes = [("price", c.sku, c.start, c.end) for c in scenario.prices]
    changes += [("promotion", p.sku, p.start, p.end) for p in scenario.promotions]
    for kind, sku, start, end in changes:
        if sku not in skus:
            raise InvalidRequest(f"scenario {kind} for {sku}, which is not requested")
        if end < first or start > last:
            raise InvalidRequest(
                f"scenario {kind} for {sku} runs {start}..{end}, outside the forecast window "
                f"{first}..{last}: it would change nothing"
            )


def apply_scenario(
    frame: pd.DataFrame, scenario: Scenario, origin: pd.Timestamp, skus: set[str]
) -> pd.DataFrame:
    """The frame with the scenario's prices and promotions on its future rows."""
    out = frame.copy()
    # Each change looks at its SKU's rows only, not the whole window's (1,000 changes on a
    # 1,000-SKU window would otherwise scan it 1,000 times).
    rows_of = out.groupby("sku", sort=False, observed=True).indices
    date = out["date"].to_numpy()
    future = date > np.datetime64(origin)
    columns = ("price", "on_promotion", "promo_depth", "promo_display", "promo_mailer")
    values = {name: out[name].to_numpy(copy=True) for name in columns}

    def rows(sku: str, start: dt.date, end: dt.date) -> np.ndarray:
        if sku not in skus:
            raise InvalidRequest(f"scenario change for {sku}, which is not requested")
        if sku not in rows_of:
            return np.empty(0, dtype=np.int64)
        at = np.asarray(rows_of[sku], dtype=np.int64)
        d = date[at]
        keep = future[at] & (d >= np.datetime64(start)) & (d <= np.datetime64(end))
        return at[keep]

    for change in scenario.prices:
        at = rows(change.sku, change.start, change.end)
        values["price"][at] = np.float32(change.price)
    for promo in scenario.promotions:
        at = rows(promo.sku, promo.start, promo.end)
        values["on_promotion"][at] = 1
        depth = values["promo_depth"]
        depth[at] = np.maximum(depth[at], np.float32(promo.depth))
        if promo.display:
            values["promo_display"][at] = 1
        if promo.mailer:
            values["promo_mailer"][at] = 1
    for name, array in values.items():
        out[name] = array
    return out
