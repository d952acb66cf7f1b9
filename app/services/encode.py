"""Forecasts as JSON bytes in the shape of ``ForecastResponse``, straight from the arrays.

orjson per SKU and a hand-joined envelope: no per-day pydantic objects (docs/benchmarks.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from featurestore.forecast_runs import CachedDay
from training.predict import Forecasts, quantile_column

_DAY0 = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class Answers:
    """SKU forecasts from one champion and one data date, each already serialised."""

    version: str
    as_of: dt.date
    horizon: int
    scenario: bool
    bodies: dict[str, bytes]  # sku -> its ``SkuForecast`` JSON
    # SKUs computed and left as arrays (``serialise=False``: totals need their means only)
    arrays: Forecasts | None = None

    def json(self, skus: Sequence[str]) -> bytes:
        """The ``ForecastResponse`` for these SKUs (each must be among the answers)."""
        parts = [self.bodies[s] for s in dict.fromkeys(skus)]
        return envelope(self.version, self.as_of, self.horizon, self.scenario, parts)


def envelope(
    version: str, as_of: dt.date, horizon: int, scenario: bool, parts: list[bytes]
) -> bytes:
    """A ``ForecastResponse`` around SKU objects already serialised."""
    head = orjson.dumps(
        {"model_version": version, "data_until": as_of, "horizon": horizon, "scenario": scenario}
    )
    return b"".join((head[:-1], b',"forecasts":[', b",".join(parts), b"]}"))


def stored_json(
    sku: str, rows: list[CachedDay], names: list[str], horizon: int, as_of: dt.date
) -> bytes:
    """A SKU's ``SkuForecast`` JSON from a stored forecast-all run's rows (quantile ``names``)."""
    rows = rows[:horizon]
    days = [
        {
            "date": d,
            "mean": m,
            "quantiles": dict(zip(names, qs, strict=True)),
            "baseline_mean": None,
            "delta": None,
        }
        for d, m, qs, _ in rows
    ]
    note = short_note(
        len(rows),
        horizon,
        (rows[0][0] - as_of).days,
        (rows[-1][0] - as_of).days,
        rows[0][0],
        rows[-1][0],
    )
    return orjson.dumps(
        {"sku": sku, "cold_start": bool(rows[0][3]), "days": days, "note": note, "fallback": False}
    )


def short_note(
    n: int, horizon: int, first_h: int, last_h: int, first: dt.date, last: dt.date
) -> str | None:
    """Why a SKU has ``n`` days of ``horizon`` (None when it has them all).

    The history grid gives a SKU no days before its launch date nor after a discontinued
    SKU's end, so a late first day is a launch and an early last day an end.
    """
    if n >= horizon:
        return None
    reasons = []
    if first_h > 1:
        reasons.append(f"launches {first}, nothing is forecast before it")
    if last_h < horizon:
        reasons.append(f"discontinued, its last day is {last}")
    return f"{n} of {horizon} days: " + "; ".join(reasons or ["days missing from the history"])


def to_json(
    fc: Forecasts, baseline: Forecasts | None, horizon: int, *, fallback: bool = False
) -> dict[str, bytes]:
    """Each SKU's ``SkuForecast`` JSON, straight from the arrays (rows grouped by SKU);
    ``fallback``: made by the fallback baseline instead of the champion (flagged)."""
    names = [quantile_column(q) for q in fc.levels]
    n = len(fc.sku)
    if n == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, fc.sku[1:] != fc.sku[:-1]]).tolist()
    ends = [*starts[1:], n]
    dates = [dt.date.fromordinal(d + _DAY0) for d in fc.day.tolist()]
    means = fc.mean.tolist()
    qs = fc.quantiles.tolist()
    steps = fc.horizon.tolist()
    base = None
    if baseline is not None:
        lookup = {
            (s, d): m
            for s, d, m in zip(
                baseline.sku.tolist(), baseline.day.tolist(), baseline.mean.tolist(), strict=True
            )
        }
        base = [lookup.get(k) for k in zip(fc.sku.tolist(), fc.day.tolist(), strict=True)]
    out = {}
    for a, b in zip(starts, ends, strict=True):
        days = []
        for i in range(a, b):
            mean = means[i]
            bm = None if base is None else base[i]
            days.append(
                {
                    "date": dates[i],
                    "mean": mean,
                    "quantiles": dict(zip(names, qs[i], strict=True)),
                    "baseline_mean": bm,
                    "delta": None if bm is None else mean - bm,
                }
            )
        sku = str(fc.sku[a])
        note = short_note(b - a, horizon, steps[a], steps[b - 1], dates[a], dates[b - 1])
        out[sku] = orjson.dumps(
            {
                "sku": sku,
                "cold_start": bool(fc.cold_start[a]),
                "days": days,
                "note": note,
                "fallback": fallback,
            }
        )
    return out
