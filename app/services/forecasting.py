"""Online forecasts: the same reader, the same fitted builder and the champion's estimators.

Used by the API's forecast routes. A request reads only the window of history the champion's
builders need (plus the horizon's known covariates), applies an optional what-if scenario to the
future rows and answers point forecasts with calibrated quantiles, serialised straight from the
arrays to JSON bytes (the shape of ``ForecastResponse``).

What does not change between ingestions (the data token, the last sales date, the products and
the calendar events) is kept per process in a ``StoreSnapshot`` and the token is checked at most
every ``token_ttl`` seconds (one small query); any ingestion changes the token, which drops the
snapshot and every cached forecast computed under it.

Computed forecasts slice the snapshot's ``CatalogueWindow`` (featurestore.window_cache: every
SKU's window read once through the same point-in-time reader, as compact arrays) instead of
reading their window with SQL per request. Freshness rule: the window belongs to the snapshot,
so it is read at the snapshot's token and ``as_of`` and dropped with it; a forecast therefore
never uses data older than the token check allows (at most ``token_ttl`` seconds behind an
ingestion, as cached forecasts). The first request that computes under a new token reads the
window (for the whole catalogue, ~1-2 s at 1,000 SKUs on PostgreSQL) and waits for it; requests
arriving while it is being read take the per-request SQL read of the same data instead of
waiting. The window is per worker and bounded by ``serve_window_mb`` (settings): ``ROW_BYTES``
(26) bytes per SKU-day, ~11 KB per SKU for a window of ~400 days + 28; a catalogue whose window
would exceed it (or a setting of 0) reads each request's window with SQL, as before.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson
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
from app.schemas import ExplainDay, ExplainResponse, ForecastResponse, Scenario
from app.services.champion import ChampionHolder, Loaded
from featurestore import forecast_runs
from featurestore.config import get_settings
from featurestore.readers import EventRows, latest_window, read_events, read_products
from featurestore.stats import store_state
from featurestore.window_cache import ROW_BYTES, CatalogueWindow
from training.explain import explain
from training.predict import Forecasts, quantile_column

CACHE_SIZE = 50_000
# How long a worker trusts its data token before asking the database again (seconds). Forecasts
# for data ingested in the meantime are served at most this much later.
TOKEN_TTL = 1.0
_DAY0 = dt.date(1970, 1, 1).toordinal()

CacheKey = tuple[str, str, str, int, tuple[float, ...]]


@dataclass(frozen=True)
class CachedForecast:
    """One SKU's forecast as served: its JSON object (a ``SkuForecast``) and its data date."""

    as_of: dt.date
    body: bytes


@dataclass(frozen=True)
class Answers:
    """SKU forecasts from one champion and one data date, each already serialised."""

    version: str
    as_of: dt.date
    horizon: int
    scenario: bool
    bodies: dict[str, bytes]  # sku -> its ``SkuForecast`` JSON

    def json(self, skus: Sequence[str]) -> bytes:
        """The ``ForecastResponse`` for these SKUs (each must be among the answers)."""
        parts = [self.bodies[s] for s in dict.fromkeys(skus)]
        return _envelope(self.version, self.as_of, self.horizon, self.scenario, parts)


@dataclass
class StoreSnapshot:
    """What serving reads from the store that only an ingestion changes."""

    token: str
    as_of: dt.date | None
    products: pd.DataFrame  # every product, sorted by sku
    position: dict[str, int]  # sku -> row of products
    events: EventRows
    checked: float  # time.monotonic() of the last token check
    # The catalogue's history window under this token (read on first need, see the docstring).
    window: CatalogueWindow | None = field(default=None, repr=False)
    window_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def select(self, skus: Sequence[str]) -> pd.DataFrame:
        """The products of these SKUs, sorted by sku (every one must be known)."""
        rows = sorted(self.position[s] for s in set(skus))
        return self.products.iloc[rows].reset_index(drop=True)


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
    cache: OrderedDict[CacheKey, CachedForecast] = field(default_factory=OrderedDict)
    # False (SALESFC_FORECAST_CACHE=false) computes every forecast: benchmarks, debugging.
    use_cache: bool = field(default_factory=lambda: get_settings().forecast_cache)
    token_ttl: float = TOKEN_TTL
    # Bytes the in-memory catalogue window may take (0: read every window with SQL).
    window_bytes: int = field(default_factory=lambda: get_settings().serve_window_mb << 20)
    _snapshot: StoreSnapshot | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    # -- the store's state ---------------------------------------------------------------------

    def snapshot(self, *, force: bool = False) -> StoreSnapshot:
        """The store's snapshot, its token checked if older than ``token_ttl`` (or forced)."""
        snap = self._snapshot
        if snap is not None and not force and time.monotonic() - snap.checked < self.token_ttl:
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and not force and time.monotonic() - snap.checked < self.token_ttl:
                return snap
            now = time.monotonic()
            token, as_of = store_state(self.engine)
            if snap is not None and snap.token == token and snap.as_of == as_of:
                snap.checked = now
                return snap
            products = read_products(self.engine)
            snap = StoreSnapshot(
                token=token,
                as_of=as_of,
                products=products,
                position={s: i for i, s in enumerate(products["sku"])},
                events=read_events(self.engine),
                checked=now,
            )
            self._snapshot = snap
            return snap

    def _fresh_token(self) -> str | None:
        """The data token if it was checked within the TTL (no I/O), else None."""
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.checked >= self.token_ttl:
            return None
        return snap.token

    # -- forecasts -----------------------------------------------------------------------------

    def _champion(self) -> Loaded:
        loaded = self.holder.current()
        if loaded is None:
            detail = "no champion model is loaded yet: train one (salesfc train)"
            if self.holder.last_error:
                detail += f"; last load failed: {self.holder.last_error}"
            raise ModelNotReady(detail)
        return loaded

    def _horizon(self, loaded: Loaded, horizon: int | None) -> int:
        model = loaded.forecaster.model
        horizon = horizon or model.horizon
        if not 1 <= horizon <= model.horizon:
            raise HorizonOutOfRange(
                f"horizon {horizon} is outside the model's range 1..{model.horizon}"
            )
        return horizon

    def _levels(self, quantiles: Sequence[float] | None) -> tuple[float, ...]:
        return tuple(float(q) for q in (quantiles or self.default_quantiles))

    def cached_json(
        self, skus: Sequence[str], horizon: int | None, quantiles: Sequence[float] | None
    ) -> bytes | None:
        """The response from memory alone (no I/O, safe on the event loop), or None.

        None unless the cache is on, the data token was checked within the TTL, the champion is
        unchanged and every SKU's forecast is cached.
        """
        if not self.use_cache:
            return None
        token = self._fresh_token()
        loaded = self.holder.peek()
        if token is None or loaded is None:
            return None
        h = horizon or loaded.forecaster.model.horizon
        if not 1 <= h <= loaded.forecaster.model.horizon:
            return None
        levels = self._levels(quantiles)
        parts = []
        as_of = None
        for sku in dict.fromkeys(skus):
            hit = self.cache.get((sku, loaded.version, token, h, levels))
            if hit is None:
                return None
            parts.append(hit.body)
            as_of = hit.as_of
        if as_of is None:
            return None
        FORECASTS.labels("cache").inc(len(parts))
        return _envelope(loaded.version, as_of, h, False, parts)

    def forecast_json(
        self,
        skus: Sequence[str],
        horizon: int | None = None,
        quantiles: Sequence[float] | None = None,
        scenario: Scenario | None = None,
    ) -> bytes:
        """Forecast the SKUs as ``ForecastResponse`` JSON; with a scenario, also the baseline."""
        return self.answers(skus, horizon, quantiles, scenario).json(skus)

    def answers(
        self,
        skus: Sequence[str],
        horizon: int | None = None,
        quantiles: Sequence[float] | None = None,
        scenario: Scenario | None = None,
    ) -> Answers:
        """Each SKU's forecast (cached, stored or computed in one prediction), not yet wrapped."""
        loaded = self._champion()
        horizon = self._horizon(loaded, horizon)
        levels = self._levels(quantiles)
        wanted = list(dict.fromkeys(skus))
        what_if = scenario is not None and bool(scenario.prices or scenario.promotions)
        snap = self.snapshot()
        cached = self.use_cache and not what_if
        keys = {s: (s, loaded.version, snap.token, horizon, levels) for s in wanted}
        answers: dict[str, bytes] = {}
        as_of = snap.as_of
        if cached:
            for sku, key in keys.items():
                hit = self.cache.get(key)
                if hit is not None:
                    as_of, answers[sku] = hit.as_of, hit.body
                    self.cache.move_to_end(key)
            missing = [s for s in wanted if s not in answers]
            if missing:
                for sku, value in self._from_run(loaded.version, snap, horizon, levels, missing):
                    as_of, answers[sku] = value.as_of, value.body
                    self._remember(keys[sku], value)
            if answers:
                FORECASTS.labels("cache").inc(len(answers))
        todo = [s for s in wanted if s not in answers]
        if todo:
            as_of, computed = self._compute(
                loaded, snap, todo, horizon, levels, scenario if what_if else None
            )
            FORECASTS.labels("computed").inc(len(computed))
            for sku, body in computed.items():
                answers[sku] = body
                if cached:
                    self._remember(keys[sku], CachedForecast(as_of, body))
        if as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        return Answers(loaded.version, as_of, horizon, what_if, answers)

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

    def explain(self, sku: str, horizon: int | None = None) -> ExplainResponse:
        """Feature-group contributions per day of a SKU's forecast (LightGBM champions)."""
        loaded = self._champion()
        horizon = self._horizon(loaded, horizon)
        model = loaded.forecaster.model
        if not model.model.startswith("lgbm"):
            raise InvalidRequest(f"the champion ({model.model}) gives no contributions")
        snap = self._known(self.snapshot(), [sku])
        products = snap.select([sku])
        as_of = snap.as_of
        if as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        frame = latest_window(
            self.engine,
            [sku],
            n_days=model.required_history,
            horizon=horizon,
            as_of=as_of,
            events=snap.events,
        )
        days = explain(model, frame, products, pd.Timestamp(as_of), horizon)
        link = (
            "log link: raw contributions shared in proportion"
            if model.model in ("lgbm_tweedie", "lgbm_poisson")
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

    def _remember(self, key: CacheKey, value: CachedForecast) -> None:
        self.cache[key] = value
        if len(self.cache) > CACHE_SIZE:
            self.cache.popitem(last=False)

    def _from_run(
        self,
        version: str,
        snap: StoreSnapshot,
        horizon: int,
        levels: tuple[float, ...],
        skus: list[str],
    ) -> list[tuple[str, CachedForecast]]:
        """Forecasts of these SKUs from the newest forecast-all run for this model and data."""
        found = forecast_runs.cached_forecasts(self.engine, version, snap.token, horizon, skus)
        if found is None:
            return []
        if [round(q, 6) for q in found.quantiles] != [round(q, 6) for q in levels]:
            return []
        names = [quantile_column(q) for q in levels]
        out = []
        for sku in skus:
            rows = found.rows.get(sku)
            if not rows:
                continue
            days = [
                {
                    "date": d,
                    "mean": m,
                    "quantiles": dict(zip(names, qs, strict=True)),
                    "baseline_mean": None,
                    "delta": None,
                }
                for d, m, qs, _ in rows[:horizon]
            ]
            body = orjson.dumps({"sku": sku, "cold_start": bool(rows[0][3]), "days": days})
            out.append((sku, CachedForecast(found.as_of, body)))
        return out

    def _known(self, snap: StoreSnapshot, skus: Sequence[str]) -> StoreSnapshot:
        """The snapshot, refreshed once if it lacks a SKU (a product loaded since); or 404."""
        if all(s in snap.position for s in skus):
            return snap
        snap = self.snapshot(force=True)
        missing = sorted(set(skus) - set(snap.position))
        if missing:
            raise UnknownSku(f"unknown SKU(s): {', '.join(missing[:20])}")
        return snap

    def _compute(
        self,
        loaded: Loaded,
        snap: StoreSnapshot,
        skus: list[str],
        horizon: int,
        levels: tuple[float, ...],
        scenario: Scenario | None,
    ) -> tuple[dt.date, dict[str, bytes]]:
        snap = self._known(snap, skus)
        as_of = snap.as_of
        if as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        products = snap.select(skus)
        forecaster = loaded.forecaster
        window = self._window(snap, loaded)
        origin = pd.Timestamp(as_of)
        if window is not None and scenario is None:
            # The window's column arrays: no frame is built (nor read back by the builders).
            columns = window.columns(skus, horizon)
            _check_covered(products, columns["sku"], columns["date"], as_of)
            base = forecaster.forecast_arrays(columns, products, origin, horizon, levels)
            return as_of, _to_json(base, None)
        if window is not None:
            frame = window.frame(skus, horizon)
        else:
            frame = latest_window(
                self.engine,
                skus,
                n_days=forecaster.history_days,
                horizon=horizon,
                as_of=as_of,
                events=snap.events,
            )
        _check_covered(
            products, frame["sku"].to_numpy(dtype=object), frame["date"].to_numpy(), as_of
        )
        base = forecaster.forecast_arrays(frame, products, origin, horizon, levels)
        if scenario is None:
            return as_of, _to_json(base, None)
        changed = apply_scenario(frame, scenario, origin, set(skus))
        scen = forecaster.forecast_arrays(changed, products, origin, horizon, levels)
        return as_of, _to_json(scen, base)

    def _window(self, snap: StoreSnapshot, loaded: Loaded) -> CatalogueWindow | None:
        """The snapshot's catalogue window for this champion, read now if missing; or None.

        None (read with SQL instead) when the window would exceed ``window_bytes`` or another
        request is reading it right now.
        """
        as_of = snap.as_of
        if as_of is None or self.window_bytes <= 0:
            return None
        n_days = loaded.forecaster.history_days
        horizon = loaded.forecaster.model.horizon
        window = snap.window
        if window is not None and window.n_days == n_days and window.horizon == horizon:
            return window
        if len(snap.products) * (n_days + horizon) * ROW_BYTES > self.window_bytes:
            return None
        if not snap.window_lock.acquire(blocking=False):
            return None
        try:
            window = snap.window
            if window is None or window.n_days != n_days or window.horizon != horizon:
                window = CatalogueWindow.read(self.engine, n_days, horizon, as_of, snap.events)
                if window.nbytes > self.window_bytes:
                    return None
                snap.window = window
            return window
        finally:
            snap.window_lock.release()


def _check_covered(
    products: pd.DataFrame, sku: np.ndarray, date: np.ndarray, as_of: dt.date
) -> None:
    """Every requested SKU has days to forecast (rows after as_of), or a clear reason why not."""
    ahead = set(sku[date > np.datetime64(as_of)].tolist())
    skus = products["sku"].to_numpy(dtype=object)
    absent = [i for i, s in enumerate(skus) if s not in ahead]
    if not absent:
        return
    status = products["status"].to_numpy(dtype=object)
    gone = [skus[i] for i in absent if status[i] == "discontinued"]
    if gone:
        raise SkuDiscontinued(f"discontinued, no forecast: {', '.join(gone[:20])}")
    raise InsufficientHistory(
        f"no sales history or launch date up to {as_of} for: "
        f"{', '.join(str(skus[i]) for i in absent[:20])}"
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


def _envelope(
    version: str, as_of: dt.date, horizon: int, scenario: bool, parts: list[bytes]
) -> bytes:
    """A ``ForecastResponse`` around SKU objects already serialised."""
    head = orjson.dumps(
        {"model_version": version, "data_until": as_of, "horizon": horizon, "scenario": scenario}
    )
    return b"".join((head[:-1], b',"forecasts":[', b",".join(parts), b"]}"))


def _to_json(fc: Forecasts, baseline: Forecasts | None) -> dict[str, bytes]:
    """Each SKU's ``SkuForecast`` JSON, straight from the arrays (rows grouped by SKU)."""
    names = [quantile_column(q) for q in fc.levels]
    n = len(fc.sku)
    if n == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, fc.sku[1:] != fc.sku[:-1]]).tolist()
    ends = [*starts[1:], n]
    dates = [dt.date.fromordinal(d + _DAY0) for d in fc.day.tolist()]
    means = fc.mean.tolist()
    qs = fc.quantiles.tolist()
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
        out[sku] = orjson.dumps({"sku": sku, "cold_start": bool(fc.cold_start[a]), "days": days})
    return out
