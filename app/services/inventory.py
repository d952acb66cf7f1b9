"""Inventory decisions for the API and the nightly plan, over the forecast service.

Daily means come from the forecast service (its caches and stored runs first), the lead-time
demand distribution and the (R, S) quantities from ``training.inventory`` with the champion's
own backtest residual blocks (built once per champion). Policy and figures: docs/operations.md.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import Engine

from app.errors import HorizonOutOfRange, InvalidRequest, ModelNotReady
from app.schemas import InventoryItem
from app.services.champion import Loaded
from app.services.forecasting import ForecastService
from featurestore import inventory_plans
from featurestore.inventory_plans import PLAN_COLUMNS
from featurestore.readers import last_sales_date
from featurestore.stats import data_token
from training.bundle import Bundle
from training.engine.select import ForecastAllFn
from training.inventory import (
    DEFAULT_LEVELS,
    NoResidualBlocks,
    ResidualBlocks,
    lead_time_demand,
    policy,
    with_level,
)
from training.predict import forecast_all, quantile_column
from training.registry import Registry


@dataclass(frozen=True)
class Calibration:
    """A champion's residual blocks and the widening its cold-start SKUs get."""

    blocks: ResidualBlocks
    cold_widen: float


def calibration(bundle: Bundle) -> Calibration:
    """The champion's backtest residual blocks; cold-start widening from the two backtests."""
    metrics = bundle.manifest.metrics
    rows = bundle.artifacts.get("backtest")
    if rows is None or rows.empty:
        raise ModelNotReady(f"bundle {bundle.version} keeps no backtest rows: retrain it")
    champion = metrics.get("champion_model")
    mine = rows[rows["model"] == champion] if champion in set(rows["model"]) else rows
    try:
        blocks = ResidualBlocks.from_backtest(mine)
    except NoResidualBlocks as exc:
        raise ModelNotReady(f"bundle {bundle.version}: {exc}") from exc
    cold = (metrics.get("cold_start") or {}).get("rmsse")
    warm = (metrics.get("overall") or {}).get("rmsse")
    # The cold-start model's scaled error over the champion's, both backtested in `train`.
    widen = float(cold) / float(warm) if cold and warm else 1.0
    return Calibration(blocks, max(1.0, widen))


def max_days(bundle: Bundle, blocks: ResidualBlocks) -> int:
    """The longest lead time + review answerable: the model's horizon and the blocks' days."""
    return min(int(bundle.artifacts["model"].horizon), blocks.horizon)


MEMO_SIZE = 50_000
# sku, model version, data token, lead time, review days, service level
MemoKey = tuple[str, str, str, int, int, float]


def with_stock(decision: dict[str, Any], on_hand: float, on_order: float) -> dict[str, Any]:
    """A decision for this stock: only the suggested order depends on it."""
    order = max(0.0, math.ceil(decision["order_up_to"] - on_hand - on_order - 1e-9))
    return {**decision, "on_hand": on_hand, "on_order": on_order, "suggested_order": float(order)}


class InventoryService:
    """Lead-time demand and (R, S) decisions for lists of SKUs from the current champion."""

    def __init__(self, forecasts: ForecastService) -> None:
        self.forecasts = forecasts
        self.engine: Engine = forecasts.engine
        self._lock = threading.Lock()
        self._calibration: tuple[str, Calibration] | None = None
        # Decisions already made for this champion and data (stock aside): an LRU, as forecasts.
        self._memo: OrderedDict[MemoKey, dict[str, Any]] = OrderedDict()

    def cached(self, item: InventoryItem) -> dict[str, Any] | None:
        """The decision from memory alone (no I/O: safe on the event loop), or None."""
        token = self.forecasts.history.fresh_token()
        loaded = self.forecasts.holder.peek()
        if token is None or loaded is None or item.lead_time_days is None:
            return None
        key = (
            item.sku,
            loaded.version,
            token,
            item.lead_time_days,
            item.review_days,
            item.service_level,
        )
        hit = self._memo.get(key)
        return None if hit is None else with_stock(hit, item.on_hand, item.on_order)

    def _remember(self, key: MemoKey, decision: dict[str, Any]) -> None:
        memo = self._memo
        memo[key] = decision
        if len(memo) > MEMO_SIZE:
            memo.popitem(last=False)

    def _calibrated(self, loaded: Loaded) -> Calibration:
        found = self._calibration
        if found is None or found[0] != loaded.version:
            with self._lock:
                found = self._calibration
                if found is None or found[0] != loaded.version:
                    found = self._calibration = (loaded.version, calibration(loaded.bundle))
        return found[1]

    def decide(self, items: Sequence[InventoryItem]) -> dict[str, Any]:
        """``InventoryResponse`` data for the items (each SKU once: the first item wins)."""
        loaded = self.forecasts.holder.current()
        if loaded is None:
            raise ModelNotReady("no champion model is loaded yet: train one (salesfc train)")
        cal = self._calibrated(loaded)
        top = max_days(loaded.bundle, cal.blocks)
        first: dict[str, InventoryItem] = {}
        for item in items:
            first.setdefault(item.sku, item)
        unique = list(first.values())
        missing = [i.sku for i in unique if i.lead_time_days is None]
        known = inventory_plans.lead_times(self.engine, missing) if missing else {}
        lead: dict[str, int] = {}
        for item in unique:
            days = item.lead_time_days or known.get(item.sku)
            if days is None:
                raise InvalidRequest(
                    f"no lead_time_days for {item.sku}: pass it, or ingest it as the product's "
                    "lead_time_days attribute"
                )
            if days + item.review_days > top:
                raise HorizonOutOfRange(
                    f"lead_time_days + review_days = {days + item.review_days} for {item.sku} "
                    f"exceeds the model's horizon of {top} days"
                )
            lead[item.sku] = days
        need = max(lead[i.sku] + i.review_days for i in unique)
        token = self.forecasts.snapshot().token
        answers = self.forecasts.answers([i.sku for i in unique], need, [0.5])
        means: dict[str, np.ndarray] = {}
        cold: dict[str, bool] = {}
        for sku, body in answers.bodies.items():
            parsed = orjson.loads(body)
            means[sku] = np.array([d["mean"] for d in parsed["days"]], dtype=np.float64)
            cold[sku] = bool(parsed["cold_start"])
        out: dict[str, dict[str, Any]] = {}
        groups: dict[tuple[int, int, float], list[InventoryItem]] = {}
        for item in unique:
            groups.setdefault((lead[item.sku], item.review_days, item.service_level), []).append(
                item
            )
        for (days, review, level), group in groups.items():
            skus = [i.sku for i in group]
            levels = with_level(DEFAULT_LEVELS, level)
            widen = np.array([cal.cold_widen if cold[s] else 1.0 for s in skus])
            demand = lead_time_demand(
                np.stack([means[s][: days + review] for s in skus]),
                cal.blocks,
                lead_days=days,
                review_days=review,
                levels=levels,
                widen=widen,
                classes=cal.blocks.classes_of(skus, cold=[cold[s] for s in skus]),
            )
            decided = policy(
                demand,
                level,
                on_hand=np.array([i.on_hand for i in group]),
                on_order=np.array([i.on_order for i in group]),
            )
            names = [quantile_column(q) for q in levels]
            for j, item in enumerate(group):
                out[item.sku] = {
                    "sku": item.sku,
                    "model_version": answers.version,
                    "data_until": answers.as_of,
                    "lead_time_days": days,
                    "review_days": review,
                    "service_level": level,
                    "cold_start": cold[item.sku],
                    "lead_time_demand": {
                        "mean": round(float(demand.mean[j]), 4),
                        "quantiles": dict(zip(names, demand.quantiles[j].tolist(), strict=True)),
                    },
                    "safety_stock": round(float(decided.safety_stock[j]), 4),
                    "reorder_point": float(decided.reorder_point[j]),
                    "order_up_to": float(decided.order_up_to[j]),
                    "on_hand": item.on_hand,
                    "on_order": item.on_order,
                    "suggested_order": float(decided.suggested_order[j]),
                }
                if self.forecasts.use_cache:
                    key = (item.sku, answers.version, token, days, review, level)
                    self._remember(key, out[item.sku])
        return {
            "model_version": answers.version,
            "data_until": answers.as_of,
            "items": [out[i.sku] for i in unique],
        }


@dataclass
class PlanResult:
    """A nightly plan and, when stored, its id."""

    frame: pd.DataFrame
    model_version: str
    as_of: dt.date
    plan_id: str | None


def plan_frame(
    forecasts: pd.DataFrame,
    bundle: Bundle,
    *,
    lead_times: dict[str, int],
    default_lead_time: int,
    review_days: int,
    service_level: float,
) -> pd.DataFrame:
    """The plan (PLAN_COLUMNS) from a forecast-all frame (sku, date, mean, cold_start)."""
    cal = calibration(bundle)
    top = max_days(bundle, cal.blocks)
    frame = forecasts.sort_values(["sku", "date"], kind="stable")
    skus, first = np.unique(frame["sku"].to_numpy(dtype=object), return_index=True)
    counts = np.diff(np.r_[first, len(frame)])
    width = int(counts.min())
    if (counts != width).any():
        raise ValueError("the forecast frame has SKUs with different numbers of days")
    means = frame["mean"].to_numpy(dtype=np.float64).reshape(len(skus), width)
    cold = frame["cold_start"].to_numpy(dtype=bool)[first]
    lead = np.array([lead_times.get(str(s), default_lead_time) for s in skus], dtype=np.int64)
    too_long = lead + review_days > min(top, width)
    if too_long.any():
        bad = skus[too_long][0]
        raise ValueError(
            f"lead_time_days + review_days = {int(lead[too_long][0]) + review_days} for {bad} "
            f"exceeds the model's horizon of {min(top, width)} days"
        )
    parts = []
    for days in np.unique(lead).tolist():
        rows = np.flatnonzero(lead == days)
        demand = lead_time_demand(
            means[rows],
            cal.blocks,
            lead_days=days,
            review_days=review_days,
            levels=[service_level],
            widen=np.where(cold[rows], cal.cold_widen, 1.0),
            classes=cal.blocks.classes_of(skus[rows], cold=cold[rows]),
        )
        decided = policy(demand, service_level)
        parts.append(
            pd.DataFrame(
                {
                    "sku": skus[rows],
                    "lead_time_days": days,
                    "review_days": review_days,
                    "service_level": service_level,
                    "mean": decided.mean,
                    "safety_stock": decided.safety_stock,
                    "reorder_point": decided.reorder_point,
                    "order_up_to": decided.order_up_to,
                    "cold_start": cold[rows],
                }
            )
        )
    out = pd.concat(parts, ignore_index=True).sort_values("sku", kind="stable")
    return out[list(PLAN_COLUMNS)].reset_index(drop=True)


def run_inventory_plan(
    engine: Engine,
    registry: Registry,
    *,
    as_of: dt.date | None = None,
    lead_time_days: int = 7,
    review_days: int = 7,
    service_level: float = 0.95,
    store: bool = True,
    forecast: ForecastAllFn = forecast_all,
) -> PlanResult:
    """Forecast the catalogue as `forecast-all` does, then plan every SKU; store the plan whole.

    ``forecast`` is forecast_all or its Dask form: the forecasts, the heavy part, then run on the
    cluster's workers; the plan's arithmetic (vectorised over SKUs) runs on their means here.
    """
    token = data_token(engine)
    bundle = registry.load_champion()
    origin = as_of or last_sales_date(engine)
    if origin is None:
        raise ValueError("the feature store has no sales history: ingest data first")
    forecasts = forecast(engine, bundle, as_of=origin, quantiles=[0.5])
    frame = plan_frame(
        forecasts,
        bundle,
        lead_times=inventory_plans.lead_times(engine),
        default_lead_time=lead_time_days,
        review_days=review_days,
        service_level=service_level,
    )
    plan_id = None
    if store:
        plan_id = inventory_plans.save_plan(
            engine,
            frame,
            model_version=bundle.version,
            as_of=origin,
            data_token=token,
            params={
                "lead_time_days": lead_time_days,
                "review_days": review_days,
                "service_level": service_level,
            },
        )
    return PlanResult(frame, bundle.version, origin, plan_id)
