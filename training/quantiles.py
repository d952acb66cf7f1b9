"""Quantile forecasts calibrated on backtest residuals (split-conformal, by level and horizon).

For each horizon week and each band of predicted level, the calibrator keeps the empirical
distribution of scaled residuals ``(y - yhat) / sqrt(yhat + 1)`` seen on rolling-origin backtests
(the square-root scale keeps count noise comparable inside a band). A quantile ``q`` of a new
forecast is ``yhat + Q_q(residuals of its bin) * sqrt(yhat + 1)``, clipped at zero and made
monotone in ``q``. Any set of quantiles can be asked for after fitting.

Sales are counts, so many actuals tie with a forecast of zero. A second step therefore maps each
requested level to the residual level whose forecasts hit it on the calibration rows: a lower
quantile ``q < 0.5`` is exceeded from below (``y < P_q``) by a share ``q`` of the rows, an upper one
is at or above (``y <= P_q``) a share ``q`` of them. A P10-P90 band then covers 80% of the days even
for intermittent series where the P10 is zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_PER_BIN = 4000
# Residual quantiles remembered per (bin, requested levels) at predict time: serving asks for the
# same few level sets again and again, and np.quantile per bin costs more than the rest.
MEMO_LEVEL_SETS = 32


# Rows of the calibration set whose raw quantiles are computed at once (see _fit_level_map).
LEVEL_MAP_ROWS = 1 << 16


class NotCalibrated(RuntimeError):
    """Quantiles were asked for before the calibrator was fitted."""


class QuantileCalibrator:
    """Conformal residual quantiles per (horizon week, predicted level band)."""

    def __init__(self, *, level_bins: int = 10, horizon_bucket: int = 7, seed: int = 0) -> None:
        self.level_bins = level_bins
        self.horizon_bucket = horizon_bucket
        self.seed = seed
        # Residual quantiles per requested level set, then per bin (a predict-time cache of the
        # fitted residuals: emptied by fit, never pickled).
        self._memo: dict[bytes, dict[tuple[int, int], np.ndarray]] = {}

    def _hbin(self, horizon: np.ndarray) -> np.ndarray:
        return np.clip((np.asarray(horizon) - 1) // self.horizon_bucket, 0, self.n_hbins_ - 1)

    def _lbin(self, yhat: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.level_edges_, yhat, side="right")

    def fit(self, y: np.ndarray, yhat: np.ndarray, horizon: np.ndarray) -> QuantileCalibrator:
        """Learn residual distributions from backtest actuals and forecasts."""
        y = np.asarray(y, dtype=np.float64)
        yhat = np.clip(np.asarray(yhat, dtype=np.float64), 0.0, None)
        horizon = np.asarray(horizon, dtype=np.int64)
        ok = np.isfinite(y) & np.isfinite(yhat)
        y, yhat, horizon = y[ok], yhat[ok], horizon[ok]
        if len(y) == 0:
            raise ValueError("no finite backtest residuals to calibrate on")
        self._memo = {}
        self.n_hbins_ = int((horizon.max() - 1) // self.horizon_bucket + 1)
        inner = np.linspace(0, 1, self.level_bins + 1)[1:-1]
        self.level_edges_ = np.unique(np.quantile(yhat, inner))
        scaled = (y - yhat) / np.sqrt(yhat + 1.0)
        rng = np.random.default_rng(self.seed)
        hb, lb = self._hbin(horizon), self._lbin(yhat)
        self.residuals_: dict[tuple[int, int], np.ndarray] = {}
        for h in range(self.n_hbins_):
            pooled = scaled[hb == h]
            for band in range(len(self.level_edges_) + 1):
                sample = scaled[(hb == h) & (lb == band)]
                if len(sample) < 50:
                    sample = pooled if len(pooled) else scaled
                if len(sample) > MAX_PER_BIN:
                    sample = rng.choice(sample, MAX_PER_BIN, replace=False)
                self.residuals_[(h, band)] = np.sort(sample.astype(np.float32))
        self.n_residuals_ = len(y)
        self._fit_level_map(y, yhat, horizon)
        return self

    def _fit_level_map(self, y: np.ndarray, yhat: np.ndarray, horizon: np.ndarray) -> None:
        """Share of calibration rows below / at-or-below the raw quantile, per raw level."""
        grid = np.linspace(0.005, 0.995, 199)
        # Counted a block of rows at a time: the raw quantiles of every row at once are
        # rows x 199 floats (2.7 GB for M5's 1.7M backtest rows). Counts of 0/1 are exact in
        # any order, so the shares equal the whole matrix's means bit for bit.
        below = np.zeros(len(grid))
        at_or_below = np.zeros(len(grid))
        for a in range(0, len(y), LEVEL_MAP_ROWS):
            b = a + LEVEL_MAP_ROWS
            raw = self._raw(yhat[a:b], horizon[a:b], grid)
            below += np.count_nonzero(y[a:b, None] < raw, axis=0)
            at_or_below += np.count_nonzero(y[a:b, None] <= raw, axis=0)
            del raw
        eps = np.arange(len(grid)) * 1e-9
        self.level_grid_ = grid
        self.share_below_ = np.maximum.accumulate(below / len(y)) + eps
        self.share_at_or_below_ = np.maximum.accumulate(at_or_below / len(y)) + eps
        # The map from requested to raw level, made monotone once on a fixed grid: a quantile's
        # value never depends on which other levels are asked for, and never crosses them.
        self.q_grid_ = grid
        self.q_levels_ = np.maximum.accumulate(
            np.array([self._level_from_curves(float(q)) for q in grid])
        )

    def _level_from_curves(self, q: float) -> float:
        curve = self.share_below_ if q < 0.5 else self.share_at_or_below_
        return float(np.interp(q, curve, self.level_grid_))

    def _level(self, q: float) -> float:
        return float(np.interp(q, self.q_grid_, self.q_levels_))

    def _raw(
        self,
        yhat: np.ndarray,
        horizon: np.ndarray,
        levels: np.ndarray,
        memo: dict[tuple[int, int], np.ndarray] | None = None,
    ) -> np.ndarray:
        hb, lb = self._hbin(horizon), self._lbin(yhat)
        out = np.empty((len(yhat), len(levels)))
        stride = len(self.level_edges_) + 1
        cell = np.asarray(hb, dtype=np.int64) * stride + lb
        for c in np.unique(cell).tolist():
            key = (c // stride, c % stride)
            rows = cell == c
            offsets = None if memo is None else memo.get(key)
            if offsets is None:
                offsets = np.quantile(self.residuals_[key], levels)
                if memo is not None:
                    memo[key] = offsets
            out[rows] = yhat[rows, None] + offsets[None, :] * np.sqrt(yhat[rows, None] + 1.0)
        return np.clip(out, 0.0, None)

    def predict(
        self, yhat: np.ndarray, horizon: np.ndarray, quantiles: Sequence[float]
    ) -> np.ndarray:
        """Quantile forecasts, shape (len(yhat), len(quantiles)), monotone in the quantile."""
        if not hasattr(self, "residuals_"):
            raise NotCalibrated("the quantile calibrator is not fitted")
        qs = np.asarray(quantiles, dtype=np.float64)
        if np.any((qs <= 0) | (qs >= 1)):
            raise ValueError("quantiles must lie strictly between 0 and 1")
        yhat = np.clip(np.asarray(yhat, dtype=np.float64), 0.0, None)
        levels = np.array([self._level(float(q)) for q in qs])
        memo = self._memo
        key = levels.tobytes()
        offsets = memo.get(key)
        if offsets is None:
            if len(memo) >= MEMO_LEVEL_SETS:
                memo.clear()
            offsets = memo[key] = {}
        return self._raw(yhat, np.asarray(horizon), levels, offsets)

    def __getstate__(self) -> dict[str, object]:
        """Pickled without the predict-time memo (a cache, not learned state)."""
        return {k: v for k, v in self.__dict__.items() if k != "_memo"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._memo = {}
