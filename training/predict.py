"""The one predict path: every forecast (backtest, forecast-all, the service) is made here.

``predict_frame`` forecasts a fitted ``Forecaster`` from a history frame (what the backtest and
the cold-start backtest call, through ``Forecaster.predict``). ``BundleForecaster`` is a loaded
bundle's view for serving and the nightly run: the champion for SKUs with history, the cold-start
model for the others, calibrated quantiles, from a frame or from the serving window's column
arrays. Both reach the estimators through ``Estimator.predict`` only.
"""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from featurestore.readers import last_sales_date, read_frame, read_products
from training.cleaning import day_numbers
from training.errors import TrainingError
from training.estimators import BASELINES
from training.feature_inputs import Prepared, prepare, prepare_arrays
from training.features import transform_stages
from training.metrics import ordered_codes

if TYPE_CHECKING:
    from training.bundle import Bundle
    from training.forecaster import Forecaster
    from training.quantiles import QuantileCalibrator


def quantile_column(level: float) -> str:
    """Column name of a quantile: 0.1 -> p10, 0.975 -> p97.5."""
    return f"p{level * 100:g}"


def hide_after(history: pd.DataFrame, cutoff: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The frame as known at ``cutoff``: rows up to ``end``, units after the cut-off unknown.
    (The rows' take is the only copy: copy-on-write keeps ``history``'s units as they are.)"""
    frame = history[(history["date"] <= end).to_numpy()].reset_index(drop=True)
    units = frame["units"].to_numpy(copy=True)
    if units.dtype.kind != "f":  # whole-number units: NaN needs a float column
        units = units.astype(np.float64)
    units[(frame["date"] > cutoff).to_numpy()] = np.nan
    return frame.assign(units=units)


@dataclass
class History:
    """A forecast's history (a frame or its column arrays) and products, each form made once.

    The column arrays are what ``featurestore.window_cache`` slices (``date`` as datetime64, each
    column with the frame's dtype); they skip building a frame, with the same answers.
    """

    source: pd.DataFrame | Mapping[str, np.ndarray]
    products: pd.DataFrame
    sku: np.ndarray
    dates: np.ndarray
    days: np.ndarray  # int64 days since 1970-01-01
    units: np.ndarray  # float64, NaN where unknown
    _frame: pd.DataFrame | None = None
    _prepared: Prepared | None = None

    @property
    def closed(self) -> np.ndarray:
        """Rows on days the shop is closed (calendar events of kind "closed"): forecast 0."""
        if "closed" not in self.source:
            return np.zeros(len(self.sku), dtype=bool)
        return np.asarray(self.source["closed"]) > 0

    @classmethod
    def of(cls, source: pd.DataFrame | Mapping[str, np.ndarray], products: pd.DataFrame) -> History:
        """The history of a frame (reindexed from 0) or of column arrays."""
        if isinstance(source, pd.DataFrame):
            source = source.reset_index(drop=True)
            sku = source["sku"].to_numpy(dtype=object)
            dates = source["date"].to_numpy()
            units = source["units"].to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            sku = np.asarray(source["sku"], dtype=object)
            dates = np.asarray(source["date"])
            units = np.asarray(source["units"], dtype=np.float64)
        return cls(source, products, sku, dates, day_numbers(dates), units)

    def day(self, origin: pd.Timestamp) -> np.ndarray:
        """Each row's day relative to the origin (1 = the first forecast day)."""
        return self.days - int(origin.to_datetime64().astype("datetime64[D]").astype(np.int64))

    def frame(self) -> pd.DataFrame:
        if self._frame is None:
            if isinstance(self.source, pd.DataFrame):
                self._frame = self.source
            else:
                data: dict[str, Any] = dict(self.source)
                data["sku"] = pd.Series(self.sku, dtype=object)
                self._frame = pd.DataFrame(data)
        return self._frame

    def prepared(self) -> Prepared:
        if self._prepared is None:
            if isinstance(self.source, pd.DataFrame):
                self._prepared = prepare(self.source, self.products)
            else:
                self._prepared = prepare_arrays(
                    sku=self.sku,
                    dates=self.dates,
                    days=self.days,
                    columns={c: np.asarray(v) for c, v in self.source.items()},
                    products=self.products,
                )
        return self._prepared


def _staged(model: Forecaster) -> bool:
    """Whether one pass of its stages over the horizon rows forecasts (direct, multi)."""
    return not model.is_baseline and model.strategy != "recursive" and bool(model.stages_)


def _stage_means(
    model: Forecaster, history: History, day: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Means (NaN outside ``rows``) and the stage of each row, the features prepared once."""
    out = np.full(len(day), np.nan)
    stage_of = np.zeros(len(day), dtype=np.int16)
    masks = [rows & (day >= s.first_h) & (day <= s.last_h) for s in model.stages_]
    busy = [i for i, mine in enumerate(masks) if mine.any()]
    # The stages' features from one pass over the grid (window sums shared between them).
    stages = [model.stages_[i] for i in busy]
    matrices = transform_stages(
        [s.builder for s in stages],
        [masks[i] for i in busy],
        history.prepared(),
        unused=[s.unused for s in stages],
    )
    for idx, fm in zip(busy, matrices, strict=True):
        stage, mine = model.stages_[idx], masks[idx]
        out[mine] = stage.estimator.predict(fm.X[:, stage.keep])
        stage_of[mine] = idx
    return out, stage_of


def _recursive_means(
    model: Forecaster, frame: pd.DataFrame, products: pd.DataFrame, day: np.ndarray, horizon: int
) -> np.ndarray:
    """Day t+h predicted from the forecasts of the days before it (one-step model)."""
    stage = model.stages_[0]
    out = np.full(len(frame), np.nan)
    units = frame["units"].to_numpy(dtype=np.float32, copy=True)
    units[day > 0] = np.nan
    work = frame.assign(units=units)
    for h in range(1, horizon + 1):
        rows = day == h
        pred = stage.estimator.predict(stage.features(work, products, rows))
        out[rows] = pred
        units[rows] = pred
        work = work.assign(units=units)
    return out


# Baselines read at most this many days before the origin, in backtests and serving alike (a
# serving window holds at least this many when the bundle forecasts with a baseline).
BASELINE_DAYS = 364


def _wide_units(past: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The units as a (SKU x date) matrix, SKUs and dates sorted (``pivot``'s): scattered by
    the frame's runs when it is already in (sku, date) order, as readers give it (pivot hashes
    every row's SKU string: seconds per baseline at M5 scale)."""
    codes, names = ordered_codes(past)
    if codes is None:
        wide = past.pivot(index="sku", columns="date", values="units")
        return wide.index.to_numpy(), wide.to_numpy(dtype=np.float64)
    days = day_numbers(past["date"].to_numpy())
    lo = int(days.min())
    present = np.zeros(int(days.max()) - lo + 1, dtype=bool)
    present[days - lo] = True  # the dates that have a row: pivot's columns
    col = (np.cumsum(present, dtype=np.int64) - 1)[days - lo]
    matrix = np.full((len(names), int(present.sum())), np.nan)
    matrix[codes, col] = past["units"].to_numpy(dtype=np.float64, na_value=np.nan)
    return names.to_numpy(), matrix


# The last frame's baseline input: a backtest fold forecasts every baseline from one frame.
_LAST_WIDE: list[tuple[Any, pd.Timestamp, tuple[np.ndarray, np.ndarray]]] = []


def _baseline_input(frame: pd.DataFrame, origin: pd.Timestamp) -> tuple[np.ndarray, np.ndarray]:
    """The SKUs and their units matrix over the BASELINE_DAYS up to the origin, made once per
    frame and origin (read-only: every baseline reads the same one)."""
    for ref, at, wide in _LAST_WIDE:
        if ref() is frame and at == origin:
            return wide
    first = origin - pd.Timedelta(days=BASELINE_DAYS)
    past = frame[(frame["date"] <= origin) & (frame["date"] > first)]
    skus, matrix = _wide_units(past)
    matrix.setflags(write=False)
    # Forgotten with the frame (the callback), so the matrix does not outlive its frame.
    ref = weakref.ref(frame, lambda _: _LAST_WIDE.clear())
    _LAST_WIDE[:] = [(ref, origin, (skus, matrix))]
    return skus, matrix


def _baseline_frame(
    name: str, frame: pd.DataFrame, origin: pd.Timestamp, horizon: int
) -> pd.DataFrame:
    skus, matrix = _baseline_input(frame, origin)
    values = BASELINES[name](matrix, horizon)
    dates = pd.date_range(origin + pd.Timedelta(days=1), periods=horizon, freq="D")
    return pd.DataFrame(
        {
            # object, as the history's: pandas would infer its own string dtype, and a merge
            # with the history's SKUs then makes a string object per row (50 MB per baseline
            # and fold at M5 scale) instead of sharing the SKUs' strings.
            "sku": pd.Series(np.repeat(skus, horizon), dtype=object),
            "date": np.tile(dates.to_numpy(), len(skus)),
            "horizon": np.tile(np.arange(1, horizon + 1, dtype=np.int16), len(skus)),
            "mean": np.clip(np.nan_to_num(values.reshape(-1), nan=0.0), 0.0, None),
        }
    )


def predict_frame(
    model: Forecaster,
    frame: pd.DataFrame,
    products: pd.DataFrame,
    origin: pd.Timestamp,
    horizon: int,
    *,
    with_stage: bool = False,
) -> pd.DataFrame:
    """sku, date, horizon, mean (and stage) for days origin+1 .. origin+horizon of each SKU."""
    if model.is_baseline:  # the frame itself: a fold's baselines share its units matrix
        return _baseline_frame(model.model, frame, origin, horizon)
    frame = frame.reset_index(drop=True)
    history = History.of(frame, products)
    day = history.day(origin)
    keep = (day >= 1) & (day <= horizon)
    if model.strategy == "recursive":
        out = _recursive_means(model, frame, products, day, horizon)
        stage_of = np.zeros(len(frame), dtype=np.int16)
    else:
        out, stage_of = _stage_means(model, history, day, keep)
    result = pd.DataFrame(
        {
            "sku": pd.Series(history.sku[keep], dtype=object),  # as in _baseline_frame
            "date": history.dates[keep],
            "horizon": day[keep].astype(np.int16),
            "mean": np.where(history.closed[keep], 0.0, np.clip(out[keep], 0.0, None)),
        }
    )
    if with_stage:
        result["stage"] = stage_of[keep]
    return result


def _means(
    model: Forecaster,
    history: History,
    origin: pd.Timestamp,
    horizon: int,
    day: np.ndarray,
    rows: np.ndarray,
) -> np.ndarray:
    """The model's means for the chosen horizon rows (in the history's row order)."""
    if _staged(model):
        return _stage_means(model, history, day, rows)[0][rows]
    frame = history.frame()
    mine = frame["sku"].isin(frame.loc[rows, "sku"].unique()).to_numpy()
    part = frame[mine]
    pred = predict_frame(model, part, history.products, origin, horizon)
    # The predictions in the frame's row order (they may come in another).
    at = pd.MultiIndex.from_frame(part[["sku", "date"]]).get_indexer(
        pd.MultiIndex.from_frame(pred[["sku", "date"]])
    )
    out = np.full(len(part), np.nan)
    ok = at >= 0
    out[at[ok]] = pred["mean"].to_numpy(dtype=np.float64)[ok]
    full = np.full(len(frame), np.nan)
    full[mine] = out
    return full[rows]


@dataclass
class Forecasts:
    """Forecast rows (grouped by SKU, by date within one) as arrays: what serving serialises."""

    sku: np.ndarray  # object, per row
    day: np.ndarray  # int64 days since 1970-01-01, per row
    horizon: np.ndarray  # int16, per row
    mean: np.ndarray  # float64, per row
    quantiles: np.ndarray  # float64, (rows, levels)
    cold_start: np.ndarray  # bool, per row
    levels: list[float]

    def frame(self) -> pd.DataFrame:
        """sku, date, horizon, mean, one column per quantile (p10...), cold_start flag."""
        out = pd.DataFrame(
            {
                "sku": pd.Series(self.sku, dtype=object),
                "date": self.day.astype("datetime64[D]").astype("datetime64[ns]"),
                "horizon": self.horizon,
                "mean": self.mean,
            }
        )
        for i, level in enumerate(self.levels):
            out[quantile_column(level)] = self.quantiles[:, i]
        out["cold_start"] = self.cold_start
        return out


@dataclass(frozen=True)
class ShippedForecast:
    """How a bundle forecasts (training.selection): the mean of ``members`` (the bundle's model
    by its name, or baselines), and for the SKUs of ``fallback`` that baseline instead."""

    name: str
    members: tuple[str, ...]
    fallback: Mapping[str, str]

    @property
    def baselines(self) -> set[str]:
        """Baselines it forecasts with."""
        return {m for m in self.members if m in BASELINES} | set(self.fallback.values())


@dataclass
class BundleForecaster:
    """The serving-side view of a loaded bundle: point forecasts plus calibrated quantiles."""

    bundle: Bundle

    @property
    def model(self) -> Forecaster:
        model: Forecaster = self.bundle.artifacts["model"]
        return model

    @property
    def cold_model(self) -> Forecaster:
        model: Forecaster = self.bundle.artifacts["cold_start"]
        return model

    @property
    def calibration(self) -> QuantileCalibrator:
        cal: QuantileCalibrator = self.bundle.artifacts["calibration"]
        return cal

    @property
    def shipped(self) -> ShippedForecast | None:
        """The selection's composition (None: the model alone, as bundles before it)."""
        shipped: ShippedForecast | None = self.bundle.artifacts.get("selection")
        return shipped

    def _member(self, name: str) -> Forecaster:
        if name == self.model.name:
            return self.model
        if name not in BASELINES:
            raise TrainingError(f"bundle {self.bundle.version} forecasts with unknown {name!r}")
        from training.forecaster import Forecaster

        return Forecaster(model=name, horizon=self.model.horizon)

    def _served_means(
        self,
        history: History,
        origin: pd.Timestamp,
        horizon: int,
        day: np.ndarray,
        rows: np.ndarray,
    ) -> np.ndarray:
        """The shipped composition's means for the chosen rows (the model's, without one)."""
        shipped = self.shipped
        if shipped is None or (shipped.members == (self.model.name,) and not shipped.fallback):
            return _means(self.model, history, origin, horizon, day, rows)
        mean = np.mean(
            [_means(self._member(m), history, origin, horizon, day, rows) for m in shipped.members],
            axis=0,
        )
        if shipped.fallback:
            names = pd.Series(history.sku[rows]).map(shipped.fallback).to_numpy(dtype=object)
            for name in sorted({n for n in names if isinstance(n, str)}):
                mine = names == name
                sub = rows.copy()
                sub[rows] = mine
                mean[mine] = _means(self._member(name), history, origin, horizon, day, sub)
        return mean

    def model_weight(self, sku: str) -> float:
        """The bundle model's weight in a SKU's served forecast (1: the model alone; 1/k in an
        ensemble of k; 0 where a baseline answers the SKU's demand class)."""
        shipped = self.shipped
        if shipped is None:
            return 1.0
        if sku in shipped.fallback or self.model.name not in shipped.members:
            return 0.0
        return 1.0 / len(shipped.members)

    @property
    def history_days(self) -> int:
        """Days of history up to the origin that a forecast reads (both models' builders)."""
        shipped = self.shipped
        days = BASELINE_DAYS if shipped is not None and shipped.baselines else 1
        for model in (self.model, self.cold_model):
            if not model.is_baseline and model.stages_:
                # Before its first target a builder needs required_history days; later targets
                # need fewer (recursive ones read forecasts), so not the horizon on top.
                days = max(days, *(s.builder.required_history for s in model.stages_))
            else:
                days = max(days, model.required_history)
        return days

    def forecast(
        self,
        frame: pd.DataFrame,
        products: pd.DataFrame,
        origin: dt.date | pd.Timestamp,
        horizon: int,
        quantiles: Sequence[float],
    ) -> pd.DataFrame:
        """sku, date, horizon, mean, one column per quantile (p10...), cold_start flag."""
        return self.forecast_arrays(frame, products, origin, horizon, quantiles).frame()

    def forecast_arrays(
        self,
        frame: pd.DataFrame | Mapping[str, np.ndarray],
        products: pd.DataFrame,
        origin: dt.date | pd.Timestamp,
        horizon: int,
        quantiles: Sequence[float],
    ) -> Forecasts:
        """The forecast rows as arrays, grouped by SKU as the frame is (readers sort by SKU).

        ``frame`` is the history frame or its column arrays (see ``History``). SKUs with fewer
        known days than the model's ``min_rows_per_sku`` are answered by the cold-start model.
        """
        levels = [float(q) for q in quantiles]
        origin = pd.Timestamp(origin)
        history = History.of(frame, products)
        sku = history.sku
        if len(sku) == 0:
            raise ValueError("nothing to forecast: the frame is empty")
        day = history.day(origin)
        change = np.empty(len(sku), dtype=bool)
        change[:1] = True
        np.not_equal(sku[1:], sku[:-1], out=change[1:])
        codes = np.cumsum(change, dtype=np.int64) - 1
        seen = (day <= 0) & ~np.isnan(history.units)
        known = np.bincount(codes, weights=seen, minlength=codes[-1] + 1)
        target = (day >= 1) & (day <= horizon)
        cold = (known < self.model.min_rows_per_sku)[codes]
        out = np.full(len(sku), np.nan)
        warm = target & ~cold
        if warm.any():
            out[warm] = self._served_means(history, origin, horizon, day, warm)
        if (target & cold).any():
            out[target & cold] = _means(
                self.cold_model, history, origin, horizon, day, target & cold
            )
        closed = history.closed[target]
        mean = np.where(closed, 0.0, out[target])
        h = day[target].astype(np.int16)
        q = np.asarray(self.calibration.predict(mean, h, levels), dtype=np.float64)
        q = q.reshape(len(mean), len(levels))
        q[closed] = 0.0
        return Forecasts(
            sku=sku[target],
            day=history.days[target],
            horizon=h,
            mean=mean,
            quantiles=q,
            cold_start=cold[target],
            levels=levels,
        )


def forecast_all(
    engine: Engine,
    bundle: Bundle,
    *,
    as_of: dt.date | None = None,
    horizon: int | None = None,
    quantiles: Sequence[float] = (0.1, 0.5, 0.9),
    skus: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Forecast every active SKU (or the given ones) from the bundle: one row per SKU and day."""
    fc = BundleForecaster(bundle)
    horizon = horizon or fc.model.horizon
    products = read_products(engine, skus)
    active = products[products["status"] != "discontinued"]
    if active.empty:
        raise TrainingError("no active SKUs to forecast")
    last = as_of or last_sales_date(engine)
    if last is None:
        raise TrainingError("the feature store has no sales history: ingest data first")
    origin = pd.Timestamp(last)
    start = (origin - pd.Timedelta(days=max(fc.model.required_history, fc.history_days))).date()
    end = (origin + pd.Timedelta(days=horizon)).date()
    frame = read_frame(engine, skus=list(active["sku"]), start=start, end=end, as_of=origin.date())
    frame = hide_after(frame, origin, pd.Timestamp(end))
    out = fc.forecast(frame, products, origin, horizon, quantiles)
    out = out.sort_values(["sku", "date"], kind="stable").reset_index(drop=True)
    out["date"] = pd.to_datetime(out["date"]).dt.date
    columns = ["sku", "date", "mean", *[quantile_column(q) for q in quantiles], "cold_start"]
    return out[columns]


def write_forecasts(frame: pd.DataFrame, out: Path) -> None:
    """Write forecasts as Parquet or CSV by the file's suffix."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise TrainingError(f"unsupported output {out.name}: use .parquet or .csv")
