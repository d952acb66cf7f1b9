"""Online forecasts: the same reader, the same fitted builder and the champion's estimators.

Used by the API's forecast routes. A request reads only the window of history the champion's
builder needs (plus the horizon's known covariates), applies an optional what-if scenario to the
future rows and answers point forecasts with calibrated quantiles.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from app.errors import (
    HorizonOutOfRange,
    InsufficientHistory,
    InvalidRequest,
    ModelNotReady,
    SkuDiscontinued,
    UnknownSku,
)
from app.observability import FORECASTS
from app.schemas import (
    ExplainDay,
    ExplainResponse,
    ForecastDay,
    ForecastResponse,
    Scenario,
    SkuForecast,
)
from app.services.champion import ChampionHolder, Loaded
from featurestore import forecast_runs
from featurestore.config import get_settings
from featurestore.readers import last_sales_date, latest_window, read_products
from featurestore.stats import data_token
from training.explain import explain
from training.pipeline import quantile_column

CACHE_SIZE = 50_000


@dataclass
class ForecastService:
    """Answers forecasts for lists of SKUs from the current champion, caching what it computed.

    A cached forecast is keyed by SKU, model version, the store's data token (it changes with every
    ingestion), horizon and quantiles, so new data or a new champion invalidates it. The nightly
    forecast-all run is the second source: a SKU it covers for the same model and data is answered
    from it without computing.
    """

    engine: Engine
    holder: ChampionHolder
    default_quantiles: Sequence[float]
    cache: OrderedDict[tuple[object, ...], tuple[dt.date, SkuForecast]] = field(
        default_factory=OrderedDict
    )
    # False (SALESFC_FORECAST_CACHE=false) computes every forecast: benchmarks, debugging.
    use_cache: bool = field(default_factory=lambda: get_settings().forecast_cache)

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
        levels = [float(q) for q in (quantiles or self.default_quantiles)]
        wanted = list(dict.fromkeys(skus))
        what_if = scenario is not None and bool(scenario.prices or scenario.promotions)
        cached = self.use_cache and not what_if
        token = data_token(self.engine) if cached else ""
        keys = {s: (s, loaded.version, token, horizon, tuple(levels)) for s in wanted}
        answers: dict[str, SkuForecast] = {}
        as_of: dt.date | None = None
        if cached:
            for sku, key in keys.items():
                hit = self.cache.get(key)
                if hit is not None:
                    as_of, answers[sku] = hit
                    self.cache.move_to_end(key)
            for sku in [s for s in wanted if s not in answers]:
                stored = self._from_run(loaded.version, token, horizon, levels, sku)
                if stored is not None:
                    as_of, answers[sku] = stored
                    self._remember(keys[sku], stored)
            if answers:
                FORECASTS.labels("cache").inc(len(answers))
        todo = [s for s in wanted if s not in answers]
        if todo:
            as_of, computed = self._compute(
                loaded, todo, horizon, levels, scenario if what_if else None
            )
            FORECASTS.labels("computed").inc(len(computed))
            for sku, answer in computed.items():
                answers[sku] = answer
                if cached:
                    self._remember(keys[sku], (as_of, answer))
        assert as_of is not None
        return ForecastResponse(
            model_version=loaded.version,
            data_until=as_of,
            horizon=horizon,
            scenario=what_if,
            forecasts=[answers[s] for s in wanted],
        )

    def explain(self, sku: str, horizon: int | None = None) -> ExplainResponse:
        """Feature-group contributions per day of a SKU's forecast (LightGBM champions)."""
        loaded = self._champion()
        model = loaded.forecaster.model
        horizon = horizon or model.horizon
        if not 1 <= horizon <= model.horizon:
            raise HorizonOutOfRange(
                f"horizon {horizon} is outside the model's range 1..{model.horizon}"
            )
        if not model.model.startswith("lgbm"):
            raise InvalidRequest(f"the champion ({model.model}) gives no contributions")
        products = read_products(self.engine, [sku])
        if products.empty:
            raise UnknownSku(f"unknown SKU: {sku}")
        as_of = last_sales_date(self.engine)
        if as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        frame = latest_window(
            self.engine, [sku], n_days=model.required_history, horizon=horizon, as_of=as_of
        )
        days = explain(model, frame, products, pd.Timestamp(as_of), horizon)
        link = (
            "log link: raw contributions shared in proportion"
            if model.model
            in (
                "lgbm_tweedie",
                "lgbm_poisson",
            )
            else "identity link"
        )
        return ExplainResponse(
            sku=sku,
            model_version=loaded.version,
            data_until=as_of,
            method=f"LightGBM pred_contrib by feature group ({link})",
            days=[
                ExplainDay(
                    date=d.date,
                    baseline=d.baseline,
                    contributions=d.contributions,
                    forecast=d.forecast,
                )
                for d in days
            ],
        )

    def _remember(self, key: tuple[object, ...], value: tuple[dt.date, SkuForecast]) -> None:
        self.cache[key] = value
        if len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)

    def _from_run(
        self, version: str, token: str, horizon: int, levels: list[float], sku: str
    ) -> tuple[dt.date, SkuForecast] | None:
        found = forecast_runs.cached_forecast(self.engine, version, token, horizon, sku)
        if found is None:
            return None
        run_levels, as_of, rows = found
        if [round(q, 6) for q in run_levels] != [round(q, 6) for q in levels]:
            return None
        names = [quantile_column(q) for q in levels]
        days = [
            ForecastDay(date=d, mean=m, quantiles=dict(zip(names, qs, strict=True)))
            for d, m, qs, _ in rows
        ]
        return as_of, SkuForecast(sku=sku, cold_start=bool(rows[0][3]), days=days)

    def _compute(
        self,
        loaded: Loaded,
        skus: list[str],
        horizon: int,
        levels: list[float],
        scenario: Scenario | None,
    ) -> tuple[dt.date, dict[str, SkuForecast]]:
        products = read_products(self.engine, skus)
        missing = sorted(set(skus) - set(products["sku"]))
        if missing:
            raise UnknownSku(f"unknown SKU(s): {', '.join(missing[:20])}")
        as_of = last_sales_date(self.engine)
        if as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        model = loaded.forecaster.model
        frame = latest_window(
            self.engine, skus, n_days=model.required_history, horizon=horizon, as_of=as_of
        )
        origin = pd.Timestamp(as_of)
        _check_covered(products, frame, as_of)
        base = loaded.forecaster.forecast(frame, products, origin, horizon, levels)
        if scenario is None:
            return as_of, _to_schema(base, levels, None)
        changed = apply_scenario(frame, scenario, origin, set(skus))
        scen = loaded.forecaster.forecast(changed, products, origin, horizon, levels)
        return as_of, _to_schema(scen, levels, base)


def _check_covered(products: pd.DataFrame, frame: pd.DataFrame, as_of: dt.date) -> None:
    """Every requested SKU has days to forecast, or a clear reason why not."""
    ahead = frame.loc[frame["date"] > pd.Timestamp(as_of), "sku"].unique()
    absent = products[~products["sku"].isin(ahead)]
    if absent.empty:
        return
    gone = absent[absent["status"] == "discontinued"]
    if not gone.empty:
        raise SkuDiscontinued(f"discontinued, no forecast: {', '.join(gone['sku'][:20])}")
    raise InsufficientHistory(
        f"no sales history or launch date up to {as_of} for: {', '.join(absent['sku'][:20])}"
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
) -> dict[str, SkuForecast]:
    cols = [quantile_column(q) for q in levels]
    frame = frame.sort_values(["sku", "date"], kind="stable")
    base_mean = None
    if baseline is not None:
        base_mean = baseline.set_index(["sku", "date"])["mean"]
    out = {}
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
        out[str(sku)] = SkuForecast(
            sku=str(sku), cold_start=bool(part["cold_start"].iloc[0]), days=days
        )
    return out
