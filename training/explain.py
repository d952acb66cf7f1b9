"""Per-day explanations: a model's feature contributions summed by feature group, in units.

Contributions are additive in the raw score space. Under a log link the distance between the
baseline ``exp(bias)`` and the forecast is shared in proportion to each group's raw terms, so the
baseline plus the groups' contributions equals the forecast exactly; under the identity link the
terms are already units.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training.feature_groups import FEATURE_GROUPS, feature_group
from training.forecaster import Forecaster


@dataclass(frozen=True)
class DayExplanation:
    """One forecast day: baseline, the contribution of each group (units) and the forecast."""

    sku: str
    date: dt.date
    baseline: float
    contributions: dict[str, float]
    forecast: float
    raw: dict[str, float]


def method(model: Forecaster) -> str:
    """How ``explain`` turns the model's contributions into units, as answers state it."""
    link = (
        "log link: raw contributions shared in proportion"
        if model.link == "log"
        else "identity link"
    )
    return f"LightGBM pred_contrib by feature group ({link})"


def explain(
    model: Forecaster,
    frame: pd.DataFrame,
    products: pd.DataFrame,
    origin: dt.date | pd.Timestamp,
    horizon: int,
) -> list[DayExplanation]:
    """Group contributions for each SKU-day of the horizon (LightGBM champions only)."""
    out: list[DayExplanation] = []
    log_link = model.link == "log"
    for rows, contrib, names in model.contributions(frame, products, origin):
        groups = np.array([feature_group(n) for n in names])
        bias = contrib[:, -1]
        terms = contrib[:, :-1]
        raw = {g: terms[:, groups == g].sum(axis=1) for g in FEATURE_GROUPS}
        total = terms.sum(axis=1)
        if log_link:
            base = np.exp(bias)
            pred = np.exp(bias + total)
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(np.abs(total) > 1e-12, (pred - base) / total, 0.0)
            units = {g: raw[g] * share for g in FEATURE_GROUPS}
        else:
            base = bias
            pred = bias + total
            units = raw
        skus = rows["sku"].to_numpy()
        dates = pd.to_datetime(rows["date"]).dt.date.to_numpy()
        origin_ts = pd.Timestamp(origin)
        for i in range(len(rows)):
            if (pd.Timestamp(dates[i]) - origin_ts).days > horizon:
                continue
            out.append(
                DayExplanation(
                    sku=str(skus[i]),
                    date=dates[i],
                    baseline=float(base[i]),
                    contributions={g: float(units[g][i]) for g in FEATURE_GROUPS},
                    forecast=float(pred[i]),
                    raw={g: float(raw[g][i]) for g in FEATURE_GROUPS},
                )
            )
    out.sort(key=lambda e: (e.sku, e.date))
    return out
