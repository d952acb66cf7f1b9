"""What-if scenarios: planned prices and promotions written onto a window's future rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from app.errors import InvalidRequest
from app.schemas import Scenario


def apply_scenario(
    frame: pd.DataFrame, scenario: Scenario, origin: pd.Timestamp, skus: set[str]
) -> pd.DataFrame:
    """The frame with the scenario's prices and promotions on its future rows."""
    out = frame.copy()
    future = (out["date"] > origin).to_numpy()
    sku = out["sku"].to_numpy()
    date = out["date"].to_numpy()
    for change in scenario.prices:
        if change.sku not in skus:
            raise InvalidRequest(f"scenario price for {change.sku}, which is not requested")
        rows = future & (sku == change.sku) & _between(date, change.start, change.end)
        out.loc[rows, "price"] = np.float32(change.price)
    for promo in scenario.promotions:
        if promo.sku not in skus:
            raise InvalidRequest(f"scenario promotion for {promo.sku}, which is not requested")
        rows = future & (sku == promo.sku) & _between(date, promo.start, promo.end)
        out.loc[rows, "on_promotion"] = np.int8(1)
        depth = out.loc[rows, "promo_depth"].to_numpy()
        out.loc[rows, "promo_depth"] = np.maximum(depth, np.float32(promo.depth))
        if promo.display:
            out.loc[rows, "promo_display"] = np.int8(1)
        if promo.mailer:
            out.loc[rows, "promo_mailer"] = np.int8(1)
    return out


def _between(dates: np.ndarray, start: dt.date, end: dt.date) -> np.ndarray:
    return (dates >= np.datetime64(start)) & (dates <= np.datetime64(end))
