"""Online forecasts: the same reader, the same fitted builder and the champion's estimators.

Used by the API's forecast routes. A request reads only the window of history the champion's
builder needs (plus the horizon's known covariates), applies an optional what-if scenario to the
future rows and answers point forecasts with calibrated quantiles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from app.errors import HorizonOutOfRange, InvalidRequest, ModelNotReady, UnknownSku
from app.schemas import ForecastDay, ForecastResponse, Scenario, SkuForecast
from app.services.champion import ChampionHolder, Loaded
from featurestore.readers import last_sales_date, latest_window, read_products
from training.pipeline import quantile_column


@dataclass
class ForecastService:
    """Answers forecasts for lists of SKUs from the current champion."""

    engine: Engine
    holder: ChampionHolder
    default_quantiles: Sequence[float]

    def _champion(self) -> Loaded:
        loaded = self.holder.current()
        if loaded is None:
            detail = "no champion model is loaded yet: train one (salesfc train)"
            if self.holder.last_error:
                detail += f"; last load failed: {self.holder.last_error}"
            raise ModelNotReady(detail)
        return loaded

    def forecast(
        self,
        skus: Sequence[str],
        horizon: int | None = None,
        quantiles: Sequence[float] | None = None,
        scenario: Scenario | None = None,
    ) -> ForecastResponse:
        """Forecast the SKUs; with a scenario, also the baseline and the difference."""
        loaded = self._champion()
        model = loaded.forecaster.model
        horizon = horizon or model.horizon
        if not 1 <= horizon <= model.horizon:
            raise HorizonOutOfRange(
                f"horizon {horizon} is outside the model's range 1..{model.horizon}"
            )
        levels = list(quantiles or self.default_quantiles)
        wanted = list(dict.fromkeys(skus))
        products = read_products(self.engine, wanted)
        missing = sorted(set(wanted) - set(products["sku"]))
        if missing:
            raise UnknownSku(f"unknown SKU(s): {', '.join(missing[:20])}")
        as_of = last_sales_date(self.engine)
        if as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        frame = latest_window(
            self.engine, wanted, n_days=model.required_history, horizon=horizon, as_of=as_of
        )
        origin = pd.Timestamp(as_of)
        base = loaded.forecaster.forecast(frame, products, origin, horizon, levels)
        scen = None
        if scenario is not None and (scenario.prices or scenario.promotions):
            what_if = apply_scenario(frame, scenario, origin, set(wanted))
            scen = loaded.forecaster.forecast(what_if, products, origin, horizon, levels)
        return ForecastResponse(
            model_version=loaded.version,
            data_until=as_of,
            horizon=horizon,
            scenario=scen is not None,
            forecasts=_to_schema(base if scen is None else scen, levels, base if scen is not None else None),
        )


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


def _to_schema(
    frame: pd.DataFrame, levels: Sequence[float], baseline: pd.DataFrame | None
) -> list[SkuForecast]:
    cols = [quantile_column(q) for q in levels]
    frame = frame.sort_values(["sku", "date"], kind="stable")
    base_mean = None
    if baseline is not None:
        base_mean = baseline.set_index(["sku", "date"])["mean"]
    out = []
    for sku, part in frame.groupby("sku", sort=False):
        days = []
        qv = part[cols].to_numpy()
        for i, (date, mean) in enumerate(zip(part["date"], part["mean"], strict=True)):
            b = None if base_mean is None else float(base_mean.loc[(sku, date)])
            days.append(
                ForecastDay(
                    date=pd.Timestamp(date).date(),
                    mean=float(mean),
                    quantiles={c: float(v) for c, v in zip(cols, qv[i], strict=True)},
                    baseline_mean=b,
                    delta=None if b is None else float(mean) - b,
                )
            )
        out.append(
            SkuForecast(sku=str(sku), cold_start=bool(part["cold_start"].iloc[0]), days=days)
        )
    return out
