"""Online forecasts from the current champion: a thin orchestrator over small parts.

A request's SKUs are answered from ``forecast_cache`` (memory, then the stored forecast-all run)
or computed in one prediction on the window ``history`` gives, under an optional what-if
``scenario``, and serialised by ``encode``; ``explaining`` answers contributions. Figures:
docs/operations.md.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from app.errors import HorizonOutOfRange, ModelNotReady
from app.observability import FALLBACKS, FORECASTS
from app.schemas import ExplainResponse, ForecastResponse, Scenario
from app.services.champion import ChampionHolder, Loaded
from app.services.encode import Answers, envelope, to_json
from app.services.explaining import explain_sku
from app.services.forecast_cache import CachedForecast, ForecastCache
from app.services.history import TOKEN_TTL, HistorySource, StoreSnapshot
from app.services.scenario import apply_scenario, check_scenario
from featurestore.config import get_settings
from featurestore.drift_events import Event
from training.accuracy import day_number
from training.fallback import window_forecasts
from training.predict import Forecasts

__all__ = ["TOKEN_TTL", "Answers", "ForecastService"]


class ForecastService:
    """Answers forecasts for lists of SKUs from the current champion, caching what it computed."""

    def __init__(
        self,
        engine: Engine,
        holder: ChampionHolder,
        default_quantiles: Sequence[float],
        *,
        use_cache: bool | None = None,
        token_ttl: float = TOKEN_TTL,
        window_bytes: int | None = None,
    ) -> None:
        self.engine = engine
        self.holder = holder
        self.default_quantiles = default_quantiles
        # False (SALESFC_FORECAST_CACHE=false) computes every forecast: benchmarks, debugging.
        self.use_cache = get_settings().forecast_cache if use_cache is None else use_cache
        if window_bytes is None:  # bytes the in-memory catalogue window may take (0: SQL)
            window_bytes = get_settings().serve_window_mb << 20
        self.cache = ForecastCache(engine)
        self.history = HistorySource(engine, token_ttl, window_bytes, on_changed=self.cache.drop)

    def snapshot(self, *, force: bool = False) -> StoreSnapshot:
        """The store's snapshot (see ``HistorySource.snapshot``)."""
        return self.history.snapshot(force=force)

    def horizon(self, loaded: Loaded, horizon: int | None) -> int:
        """The request's horizon (default: the champion's), checked against the champion's."""
        top = loaded.forecaster.model.horizon
        horizon = horizon or top
        if not 1 <= horizon <= top:
            raise HorizonOutOfRange(f"horizon {horizon} is outside the model's range 1..{top}")
        return horizon

    def cached_json(
        self, skus: Sequence[str], horizon: int | None, quantiles: Sequence[float] | None
    ) -> bytes | None:
        """The response from memory alone (no I/O, safe on the event loop), or None.

        None unless the cache is on, the data token was checked within the TTL, the champion is
        unchanged and every SKU's forecast is cached.
        """
        if not self.use_cache:
            return None
        token = self.history.fresh_token()
        loaded = self.holder.peek()
        if token is None or loaded is None:
            return None
        try:
            h = self.horizon(loaded, horizon)
        except HorizonOutOfRange:
            return None
        snap = self.history.current()
        if snap is None:
            return None
        version = self._key_version(loaded.version, snap)
        hit = self.cache.peek(skus, version, token, h, self._levels(quantiles))
        if hit is None:
            return None
        as_of, parts = hit
        FORECASTS.labels("cache").inc(len(parts))
        return envelope(loaded.version, as_of, h, False, parts)

    def forecast_json(
        self,
        skus: Sequence[str],
        horizon: int | None = None,
        quantiles: Sequence[float] | None = None,
        scenario: Scenario | None = None,
    ) -> bytes:
        """Forecast the SKUs as ``ForecastResponse`` JSON; with a scenario, also the baseline."""
        return self.answers(skus, horizon, quantiles, scenario).json(skus)

    def forecast(
        self,
        skus: Sequence[str],
        horizon: int | None = None,
        quantiles: Sequence[float] | None = None,
        scenario: Scenario | None = None,
    ) -> ForecastResponse:
        """``forecast_json`` as a pydantic object (tests, scripts)."""
        body = self.forecast_json(skus, horizon, quantiles, scenario)
        return ForecastResponse.model_validate_json(body)

    def answers(
        self,
        skus: Sequence[str],
        horizon: int | None = None,
        quantiles: Sequence[float] | None = None,
        scenario: Scenario | None = None,
        *,
        serialise: bool = True,
    ) -> Answers:
        """Each SKU's forecast (cached, stored or computed in one prediction), not yet wrapped.

        ``serialise=False`` (totals, which need the means only) with the cache off: the SKUs
        computed stay arrays in ``Answers.arrays``, not serialised (a fifth of a computed
        total's time). With the cache on they are serialised all the same, to be remembered for
        the next requests; under a fallback too, as ever.
        """
        loaded = self._champion()
        horizon = self.horizon(loaded, horizon)
        levels = self._levels(quantiles)
        wanted = list(dict.fromkeys(skus))
        what_if = scenario is not None and scenario.changes
        snap = self.snapshot()
        if what_if and snap.as_of is not None:
            assert scenario is not None
            first = snap.as_of + dt.timedelta(days=1)
            check_scenario(scenario, set(wanted), first, snap.as_of + dt.timedelta(days=horizon))
        cached = self.use_cache and not what_if
        answers: dict[str, bytes] = {}
        as_of = snap.as_of
        # Under a fallback every entry is keyed apart (nor does a stored run answer).
        version = self._key_version(loaded.version, snap)
        if cached and as_of is not None:
            found = self.cache.lookup(
                wanted,
                version,
                snap.token,
                horizon,
                levels,
                as_of=as_of,
                pushed_since=snap.changed_since,
            )
            for sku, value in found.items():
                as_of, answers[sku] = value.as_of, value.body
            if answers:
                FORECASTS.labels("cache").inc(len(answers))
        todo = [s for s in wanted if s not in answers]
        arrays = None
        as_arrays = not (serialise or cached or what_if)
        if todo and as_arrays and self.fallback(loaded.version, snap) is None:
            as_of, arrays = self._arrays(loaded, snap, todo, horizon, levels)
            FORECASTS.labels("computed").inc(len(todo))
        elif todo:
            # A push landing while this computes must not leave the older answer in the cache.
            versions = {s: snap.version(s) for s in todo}
            as_of, computed = self._compute(
                loaded, snap, todo, horizon, levels, scenario if what_if else None
            )
            FORECASTS.labels("computed").inc(len(computed))
            for sku, body in computed.items():
                answers[sku] = body
                if cached and self.history.version(sku) == versions[sku]:
                    key = (sku, version, snap.token, horizon, levels)
                    self.cache.remember(key, CachedForecast(as_of, body))
        if as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        return Answers(loaded.version, as_of, horizon, what_if, answers, arrays)

    def explain(self, sku: str, horizon: int | None = None) -> ExplainResponse:
        """Feature-group contributions per day of a SKU's forecast (LightGBM champions)."""
        loaded = self._champion()
        return explain_sku(loaded, self.history, sku, self.horizon(loaded, horizon))

    def _champion(self) -> Loaded:
        loaded = self.holder.current()
        if loaded is None:
            detail = "no champion model is loaded yet: train one (salesfc train)"
            if self.holder.last_error:
                detail += f"; last load failed: {self.holder.last_error}"
            raise ModelNotReady(detail)
        return loaded

    def _levels(self, quantiles: Sequence[float] | None) -> tuple[float, ...]:
        return tuple(float(q) for q in (quantiles or self.default_quantiles))

    def fallback(self, version: str, snap: StoreSnapshot) -> Event | None:
        """The fallback in force for this champion version, or None."""
        event = snap.fallback
        if event is None or event.kind != "fallback_on" or event.model_version != version:
            return None
        return event

    def _key_version(self, version: str, snap: StoreSnapshot) -> str:
        event = self.fallback(version, snap)
        return version if event is None else f"{version}~fallback-{event.id}"

    def _compute(
        self,
        loaded: Loaded,
        snap: StoreSnapshot,
        skus: list[str],
        horizon: int,
        levels: tuple[float, ...],
        scenario: Scenario | None,
    ) -> tuple[dt.date, dict[str, bytes]]:
        forecaster = loaded.forecaster
        event = self.fallback(loaded.version, snap) if scenario is None else None
        if event is not None:
            chosen = event.detail.get("skus")
            failing = set(skus) if chosen == "all" else set(chosen or ()) & set(skus)
            if failing:
                return self._fallback(loaded, snap, skus, failing, horizon, levels, event)
        if scenario is None:
            as_of, base = self._arrays(loaded, snap, skus, horizon, levels)
            return as_of, to_json(base, None, horizon)
        as_of, products, data = self.history.read(
            snap,
            skus,
            n_days=forecaster.history_days,
            horizon=horizon,
            max_horizon=forecaster.model.horizon,
            frame=True,
        )
        origin = pd.Timestamp(as_of)
        base = forecaster.forecast_arrays(data, products, origin, horizon, levels)
        assert isinstance(data, pd.DataFrame)  # read as a frame for the scenario
        changed = apply_scenario(data, scenario, origin, set(skus))
        what_if = forecaster.forecast_arrays(changed, products, origin, horizon, levels)
        return as_of, to_json(what_if, base, horizon)

    def _arrays(
        self,
        loaded: Loaded,
        snap: StoreSnapshot,
        skus: list[str],
        horizon: int,
        levels: tuple[float, ...],
    ) -> tuple[dt.date, Forecasts]:
        """The champion's forecasts of the SKUs, one prediction on their window."""
        forecaster = loaded.forecaster
        as_of, products, data = self.history.read(
            snap,
            skus,
            n_days=forecaster.history_days,
            horizon=horizon,
            max_horizon=forecaster.model.horizon,
            frame=False,
        )
        return as_of, forecaster.forecast_arrays(
            data, products, pd.Timestamp(as_of), horizon, levels
        )

    def _fallback(
        self,
        loaded: Loaded,
        snap: StoreSnapshot,
        skus: list[str],
        failing: set[str],
        horizon: int,
        levels: tuple[float, ...],
        event: Event,
    ) -> tuple[dt.date, dict[str, bytes]]:
        """The champion for the SKUs it does not fail on, the fallback baseline for the others."""
        bodies: dict[str, bytes] = {}
        rest = [s for s in skus if s not in failing]
        as_of = snap.as_of
        if rest:
            as_of, bodies = self._compute(
                loaded, _without_fallback(snap), rest, horizon, levels, None
            )
        forecaster = loaded.forecaster
        mine = [s for s in skus if s in failing]
        as_of, _, data = self.history.read(
            snap,
            mine,
            n_days=forecaster.history_days,
            horizon=horizon,
            max_horizon=forecaster.model.horizon,
            frame=False,
        )
        day = np.asarray(data["date"]).astype("datetime64[D]").astype(np.int64)
        base = window_forecasts(
            np.asarray(data["sku"], dtype=object),
            day,
            np.asarray(data["units"], dtype=np.float64),
            day_number(as_of),
            list(levels),
            str(event.detail.get("baseline", "seasonal_naive")),
        )
        bodies.update(to_json(base, None, horizon, fallback=True))
        FALLBACKS.inc(len(mine))
        return as_of, bodies


def _without_fallback(snap: StoreSnapshot) -> StoreSnapshot:
    """The snapshot as the champion's own path sees it (no fallback in force)."""
    return dataclasses.replace(snap, fallback=None)
