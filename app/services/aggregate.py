"""Totals of categories, stores and the catalogue for the API, the dashboard and forecast-all.

A group's SKUs come from the store's snapshot (discontinued ones left out); their daily means
from the forecast service (its caches and the stored nightly run first, else one prediction);
the total's mean is their sum and its quantiles come from joint sample paths over the champion's
backtest residual blocks (``training.aggregate``). Answers are remembered per champion, data
token and request, as forecasts are.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pandas as pd

from app.errors import InsufficientHistory, ModelNotReady, NotFound
from app.services.champion import Loaded
from app.services.forecasting import ForecastService
from app.services.inventory import Calibration, calibration
from training.aggregate import LEVELS, group_keys, joint_totals, totals_frame
from training.predict import quantile_column
from training.registry import Registry

MEMO_SIZE = 2_000
_EPOCH = dt.date(1970, 1, 1)
# level, key, horizon, levels, model version, data token
MemoKey = tuple[str, str, int, tuple[float, ...], str, str]


class AggregateService:
    """Daily totals of a group of SKUs at a level of the hierarchy, from the current champion."""

    def __init__(self, forecasts: ForecastService) -> None:
        self.forecasts = forecasts
        self._lock = threading.Lock()
        self._calibration: tuple[str, Calibration] | None = None
        self._groups: tuple[str, dict[str, dict[str, list[str]]]] | None = None
        self._memo: OrderedDict[MemoKey, dict[str, Any]] = OrderedDict()

    def forget(self) -> None:
        """Drop remembered answers (benchmarks time computed requests)."""
        self._memo.clear()

    def _hierarchy(self) -> dict[str, dict[str, list[str]]]:
        """level -> key -> its active SKUs (sorted), for the current snapshot."""
        snap = self.forecasts.snapshot()
        found = self._groups
        if found is None or found[0] != snap.token:
            products = snap.products
            active = products[products["status"] != "discontinued"].reset_index(drop=True)
            skus = active["sku"].to_numpy(dtype=object)
            table: dict[str, dict[str, list[str]]] = {}
            for level in LEVELS:
                keys = group_keys(active, level)
                groups: dict[str, list[str]] = {}
                for key, sku in zip(keys.tolist(), skus.tolist(), strict=True):
                    groups.setdefault(key, []).append(sku)
                table[level] = {k: sorted(v) for k, v in sorted(groups.items())}
            found = self._groups = (snap.token, table)
        return found[1]

    def groups(self, level: str) -> dict[str, list[str]]:
        """The groups at a level (sorted) and their active SKUs."""
        return self._hierarchy()[level]

    def keys(self, level: str) -> list[str]:
        """The groups at a level, sorted."""
        return list(self.groups(level))

    def members(self, level: str, key: str) -> list[str]:
        """The active SKUs of a group; NotFound (404) for a key the level does not have."""
        groups = self._hierarchy()[level]
        if key not in groups:
            known = list(groups)
            sample = ", ".join(known[:10]) + (" ..." if len(known) > 10 else "")
            raise NotFound(f"no {level} named {key!r}: known {level} keys are {sample}")
        return groups[key]

    def _forecastable(self, skus: list[str], horizon: int) -> list[str]:
        """The SKUs with days to forecast: sold before, or launching within the horizon.

        A product known only by its row (no sale, no launch date, or a launch after the horizon)
        has nothing to add to a total, and asking for its forecast would fail the whole request.
        """
        snap = self.forecasts.snapshot()
        if snap.as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        rows = snap.products.iloc[[snap.position[s] for s in skus]]
        last = pd.Timestamp(snap.as_of + dt.timedelta(days=horizon))
        keep = rows["first_sale_date"].notna() | (rows["launch_date"] <= last)
        return [s for s, k in zip(skus, keep.tolist(), strict=True) if k]

    def _calibrated(self, loaded: Loaded) -> Calibration:
        found = self._calibration
        if found is None or found[0] != loaded.version:
            with self._lock:
                found = self._calibration
                if found is None or found[0] != loaded.version:
                    found = self._calibration = (loaded.version, calibration(loaded.bundle))
        return found[1]

    def total(
        self,
        level: str,
        key: str,
        horizon: int | None,
        quantiles: Sequence[float] | None,
    ) -> dict[str, Any]:
        """``AggregateResponse`` data: the group's daily mean and quantiles, and over the days."""
        loaded = self.forecasts.holder.current()
        if loaded is None:
            raise ModelNotReady("no champion model is loaded yet: train one (salesfc train)")
        skus = self.members(level, key)
        levels = tuple(float(q) for q in (quantiles or self.forecasts.default_quantiles))
        h = self.forecasts.horizon(loaded, horizon)
        token = self.forecasts.snapshot().token
        memo_key = (level, key, h, levels, loaded.version, token)
        hit = self._memo.get(memo_key) if self.forecasts.use_cache else None
        if hit is not None:
            return hit
        skus = self._forecastable(skus, h)
        if not skus:
            raise InsufficientHistory(f"no SKU of {level} {key!r} has days to forecast")
        cal = self._calibrated(loaded)
        if h > cal.blocks.horizon:
            raise ModelNotReady(
                f"bundle {loaded.version} has backtest residuals over {cal.blocks.horizon} days "
                f"only, fewer than the {h} asked for: retrain it"
            )
        # The SKU forecasts at the service's default levels: the ones the stored run and the
        # cache hold (the totals' own levels come from the paths).
        answers = self.forecasts.answers(skus, h, None, serialise=False)
        first = answers.as_of + dt.timedelta(days=1)
        means = np.full((len(skus), h), np.nan)
        cold = np.zeros(len(skus), dtype=bool)
        for i, sku in enumerate(skus):
            body = answers.bodies.get(sku)
            if body is None:
                continue  # computed: in answers.arrays
            parsed = orjson.loads(body)
            cold[i] = bool(parsed["cold_start"])
            for day in parsed["days"]:
                d = (dt.date.fromisoformat(day["date"]) - first).days
                if 0 <= d < h:
                    means[i, d] = day["mean"]
        fc = answers.arrays
        if fc is not None and len(fc.sku):
            row = pd.Index(skus).get_indexer(pd.Index(fc.sku))
            step = fc.day - (first - _EPOCH).days
            ok = (row >= 0) & (step >= 0) & (step < h)
            means[row[ok], step[ok]] = fc.mean[ok]
            cold[row[fc.cold_start & (row >= 0)]] = True
        totals = joint_totals(
            means,
            np.zeros(len(skus), dtype=np.int64),
            [key],
            skus,
            cal.blocks,
            levels=levels,
            widen=np.where(cold, cal.cold_widen, 1.0),
        )
        names = [quantile_column(q) for q in levels]
        days = [
            {
                "date": first + dt.timedelta(days=d),
                "mean": float(totals.mean[0, d]),
                "quantiles": dict(zip(names, totals.quantiles[0, d].tolist(), strict=True)),
            }
            for d in range(h)
        ]
        answer = {
            "level": level,
            "key": key,
            "model_version": answers.version,
            "data_until": answers.as_of,
            "horizon": h,
            "skus": len(skus),
            "cold_start_skus": int(cold.sum()),
            "paths": totals.paths,
            "days": days,
            "period": {
                "start": first,
                "end": first + dt.timedelta(days=h - 1),
                "mean": float(totals.period_mean[0]),
            },
        }
        if self.forecasts.use_cache:
            self._memo[memo_key] = answer
            if len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return answer


def forecast_totals(
    forecasts: pd.DataFrame,
    products: pd.DataFrame,
    registry: Registry,
    version: str,
    *,
    levels: Sequence[str],
    quantiles: Sequence[float],
) -> pd.DataFrame:
    """The totals of a forecast-all frame at the levels (``training.aggregate.totals_frame``)."""
    cal = calibration(registry.load(version))
    return totals_frame(
        forecasts,
        products,
        cal.blocks,
        levels=levels,
        quantiles=quantiles,
        cold_widen=cal.cold_widen,
    )
