"""Inventory decisions from the forecast distribution: lead-time demand, safety stock, order-up-to.

A daily P90 summed over L days is not the P90 of the L-day total: it overstates it when days are
independent and understates it when they move together. The total is therefore made from sample
paths. Each path is one whole block of rolling-origin backtest residuals (one SKU at one cut-off,
days 1..L), scaled the way ``training.quantiles`` scales (``(y - yhat) / sqrt(yhat + 1)``), laid
over the SKU's own daily means: ``y*_h = max(0, mu_h + r_h * sqrt(mu_h + 1))``. Whole blocks keep
the days' dependence (a SKU whose forecast ran high on day 1 ran high all week); the blocks used
for a SKU are the ``neighbours`` whose forecast level over those days is closest to its own, so a
slow mover borrows the errors of slow movers, and they are drawn from SKUs of its own demand class
(smooth, erratic, intermittent, lumpy: ``training.metrics.demand_class``, as the backtest
classified each SKU) when the backtest holds at least ``MIN_CLASS_BLOCKS`` of them: at the same
level a smooth SKU's errors are narrower than a lumpy one's, and borrowing across classes
over-stocked the smooth SKUs and under-stocked the lumpy ones (docs/benchmarks.md, Inventory).
Sales are counts, so each path's total is rounded to whole units: every quantile is a whole
number of units, never negative.

The policy is periodic review (R, S): every ``review_days`` the stock position (on hand + on
order) is raised to the order-up-to level S, the ``service_level`` quantile of demand over
``lead_time_days + review_days`` (what must be covered until the order after next arrives).
``reorder_point`` is the same quantile over the lead time alone, the trigger level of continuous
review ((s, S) with R = 0). Cold-start SKUs (forecast from attributes) get their residuals widened
by the cold-start model's RMSSE over the champion's, both measured by the backtests in the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.quantiles import QuantileCalibrator

# Paths per SKU: the blocks whose forecast level is nearest. 200 leaves 10 paths above a P95,
# enough for a stable order-up-to level without borrowing errors of SKUs ten times faster.
NEIGHBOURS = 200
# A residual block may miss this share of its days at most (unscored days, filled with its mean
# forecast and no error): a closure day or a stock-out costs a block nothing, a fold does not.
MAX_MISSING_SHARE = 0.25
# A demand class lends its own blocks only when it has at least this many (else every class's):
# half the neighbours still leaves 5 paths above a P95.
MIN_CLASS_BLOCKS = NEIGHBOURS // 2
# SKUs per vectorised step: bounds the (skus x paths x days) array to a few tens of MB.
CHUNK = 256
SERVICE_LEVEL_RANGE = (0.5, 0.999)
DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.99)


class NoResidualBlocks(ValueError):
    """The backtest holds no residual block that covers enough of its horizon."""


@dataclass
class ResidualBlocks:
    """Backtest residual paths, one per (SKU, cut-off), scaled like the quantile calibrator."""

    scaled: np.ndarray  # (blocks, horizon) float64
    yhat: np.ndarray  # (blocks, horizon) float64, the forecast behind each residual
    fold: np.ndarray  # (blocks,) int
    sku: np.ndarray  # (blocks,) object
    demand_class: np.ndarray  # (blocks,) object
    _cum: np.ndarray | None = field(default=None, repr=False)
    _class_of: dict[str, str] | None = field(default=None, repr=False)

    @property
    def horizon(self) -> int:
        """Days each block covers."""
        return int(self.scaled.shape[1])

    def __len__(self) -> int:
        return len(self.fold)

    @classmethod
    def from_backtest(cls, rows: pd.DataFrame) -> ResidualBlocks:
        """Blocks from one model's backtest rows (fold, sku, horizon, y, yhat[, demand_class]).

        A block may miss at most MAX_MISSING_SHARE of the fold's days (days the backtest does
        not score: a closed store, a flagged stock-out; a SKU launched or ended inside the
        fold): they are filled with its mean forecast and no error, so a path still covers
        every day it claims. Blocks missing more are left out.
        """
        if rows.empty:
            raise NoResidualBlocks("the backtest holds no rows")
        h = rows["horizon"].to_numpy(dtype=np.int64)
        top = int(h.max())
        keys = rows[["fold", "sku"]].astype({"fold": np.int64, "sku": object})
        codes, uniq = pd.factorize(pd.MultiIndex.from_frame(keys))
        n = len(uniq)
        y = np.full((n, top), np.nan)
        yhat = np.full((n, top), np.nan)
        y[codes, h - 1] = rows["y"].to_numpy(dtype=np.float64)
        yhat[codes, h - 1] = np.clip(rows["yhat"].to_numpy(dtype=np.float64), 0.0, None)
        present = np.isfinite(y) & np.isfinite(yhat)
        ok = present.sum(axis=1) >= math.ceil((1.0 - MAX_MISSING_SHARE) * top)
        if not ok.any():
            raise NoResidualBlocks("no backtest block covers enough of its horizon")
        level = np.where(present, yhat, 0.0).sum(axis=1) / np.maximum(present.sum(axis=1), 1)
        yhat = np.where(present, yhat, level[:, None])
        y = np.where(present, y, yhat)
        first = np.zeros(n, dtype=np.int64)
        first[codes[::-1]] = np.arange(len(rows))[::-1]  # a row of each block
        if "demand_class" in rows:
            classes = rows["demand_class"].astype(str).to_numpy(dtype=object)[first]
        else:
            classes = np.full(n, "all", dtype=object)
        folds = np.asarray([k[0] for k in uniq], dtype=np.int64)
        skus = np.asarray([k[1] for k in uniq], dtype=object)
        return cls(
            scaled=((y - yhat) / np.sqrt(yhat + 1.0))[ok],
            yhat=yhat[ok],
            fold=folds[ok],
            sku=skus[ok],
            demand_class=classes[ok],
        )

    def subset(self, keep: np.ndarray) -> ResidualBlocks:
        """The blocks where ``keep`` is true (leave-one-fold-out replays)."""
        return ResidualBlocks(
            self.scaled[keep], self.yhat[keep], self.fold[keep], self.sku[keep],
            self.demand_class[keep],
        )  # fmt: skip

    def level(self, days: int) -> np.ndarray:
        """Each block's mean daily forecast over its first ``days`` days."""
        if self._cum is None:
            self._cum = np.cumsum(self.yhat, axis=1)
        return np.asarray(self._cum[:, days - 1] / days)

    def classes_of(
        self, skus: Sequence[str] | np.ndarray, cold: Sequence[bool] | np.ndarray | None = None
    ) -> np.ndarray:
        """Each SKU's demand class as its blocks carry it; none ("") for a SKU without blocks
        (new since the backtest) and for a ``cold`` (cold-start) SKU, which borrows from every
        class, widened by the cold-start model's measured error."""
        if self._class_of is None:
            self._class_of = dict(
                zip(self.sku.tolist(), self.demand_class.astype(str).tolist(), strict=True)
            )
        found = self._class_of
        out = np.asarray([found.get(str(s), "") for s in skus], dtype=object)
        if cold is not None:
            out[np.asarray(cold, dtype=bool)] = ""
        return out

    def joint(self, skus: np.ndarray, level: np.ndarray) -> np.ndarray:
        """(cut-offs, skus): each SKU's block at every cut-off, its own where the backtest has
        it, else the block of that cut-off nearest to ``level`` (its mean daily forecast).

        A joint path reads every SKU at the same cut-off, so what moved SKUs together over
        those days (a holiday, a store's bad week, a chain-wide trend) moves the path's total.
        """
        folds = np.unique(self.fold)
        whole = self.level(self.horizon)
        out = np.empty((len(folds), len(skus)), dtype=np.int64)
        for i, fold in enumerate(folds.tolist()):
            mine = np.flatnonzero(self.fold == fold)
            own = dict(zip(self.sku[mine].tolist(), mine.tolist(), strict=True))
            idx = np.array([own.get(s, -1) for s in np.asarray(skus).tolist()], dtype=np.int64)
            missing = idx < 0
            if missing.any():
                near = _neighbours(whole[mine], np.asarray(level)[missing], 1)[:, 0]
                idx[missing] = mine[near]
            out[i] = idx
        return out


@dataclass
class LeadTimeDemand:
    """Demand totals over ``days`` (and over the lead time alone) per SKU, from sample paths."""

    days: int
    lead_days: int
    mean: np.ndarray  # (skus,) the sum of the daily means over ``days``
    levels: list[float]
    quantiles: np.ndarray  # (skus, levels) whole units, non-decreasing in the level
    lead_quantiles: np.ndarray  # (skus, levels) the same over the lead time alone
    lead_mean: np.ndarray  # (skus,)
    paths: int


def path_values(means: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """Sample paths from daily means and scaled residuals: ``max(0, mu + r * sqrt(mu + 1))``."""
    return np.maximum(means + scaled * np.sqrt(means + 1.0), 0.0)


def upper_quantiles(samples: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Finite-sample (conformal) quantiles along the last axis: the ceil((n+1)q)-th smallest."""
    n = samples.shape[-1]
    ranks = np.minimum(np.ceil((n + 1) * levels).astype(np.int64), n) - 1
    ordered = np.sort(samples, axis=-1)
    return np.asarray(ordered[..., ranks])


def _neighbours(block_level: np.ndarray, sku_level: np.ndarray, k: int) -> np.ndarray:
    """Indices (skus, k) of the k blocks nearest in log level to each SKU's level."""
    order = np.argsort(block_level, kind="stable")
    ranked = np.log1p(block_level[order])
    n = len(order)
    k = min(k, n)
    target = np.log1p(sku_level)
    # The k nearest of a sorted array form a window [start, start + k): binary search for the
    # start where moving right stops bringing a closer element in (vectorised over SKUs).
    lo = np.zeros(len(target), dtype=np.int64)
    hi = np.full(len(target), n - k, dtype=np.int64)
    while np.any(lo < hi):
        mid = (lo + hi) // 2
        right = target - ranked[mid] > ranked[np.minimum(mid + k, n - 1)] - target
        right &= lo < hi
        lo = np.where(right, mid + 1, lo)
        hi = np.where(~right & (lo < hi), mid, hi)
    start = lo
    return np.asarray(order[start[:, None] + np.arange(k)[None, :]])


def _pools(
    blocks: ResidualBlocks, classes: np.ndarray | None, n: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(SKU rows, blocks they borrow from): each SKU's own demand class where the backtest holds
    at least MIN_CLASS_BLOCKS blocks of it, every block otherwise (no class, or too few)."""
    everything = np.arange(len(blocks))
    if classes is None:
        return [(np.arange(n), everything)]
    classes = np.asarray(classes, dtype=object)
    if classes.shape != (n,):
        raise ValueError(f"classes {classes.shape} do not match {n} SKUs")
    pooled = np.zeros(n, dtype=bool)
    out = []
    for cls in sorted({str(c) for c in classes.tolist() if c}):
        mine = np.flatnonzero(blocks.demand_class == cls)
        if len(mine) >= MIN_CLASS_BLOCKS:
            rows = classes == cls
            pooled |= rows
            out.append((np.flatnonzero(rows), mine))
    if not pooled.all():
        out.append((np.flatnonzero(~pooled), everything))
    return out


def lead_time_demand(
    means: np.ndarray,
    blocks: ResidualBlocks,
    *,
    lead_days: int,
    review_days: int = 0,
    levels: Sequence[float] = DEFAULT_LEVELS,
    widen: np.ndarray | float = 1.0,
    neighbours: int = NEIGHBOURS,
    classes: np.ndarray | None = None,
) -> LeadTimeDemand:
    """The demand total over ``lead_days + review_days`` of each SKU from its daily means.

    ``means`` is (skus, days >= lead + review), day 1 first. ``widen`` multiplies the residuals
    (per SKU or one factor): cold-start SKUs pass their measured widening. ``classes``: each
    SKU's demand class (``ResidualBlocks.classes_of``; "" for none): its paths come from blocks
    of that class when the backtest has enough of them.
    """
    days = lead_days + review_days
    means = np.clip(np.asarray(means, dtype=np.float64), 0.0, None)
    if lead_days < 1 or review_days < 0:
        raise ValueError("lead_days must be >= 1 and review_days >= 0")
    if means.ndim != 2 or means.shape[1] < days:
        raise ValueError(f"need daily means over {days} days, got shape {means.shape}")
    if days > blocks.horizon:
        raise ValueError(f"{days} days exceed the backtest horizon of {blocks.horizon}")
    qs = np.asarray(levels, dtype=np.float64)
    if np.any((qs <= 0) | (qs >= 1)):
        raise ValueError("levels must lie strictly between 0 and 1")
    n = len(means)
    mu = means[:, :days]
    width = np.broadcast_to(np.asarray(widen, dtype=np.float64), (n,))
    block_level = blocks.level(days)
    sku_level = mu.mean(axis=1)
    resid = blocks.scaled[:, :days]
    out = np.empty((n, len(qs)))
    lead_out = np.empty((n, len(qs)))
    paths = neighbours
    for rows, pool in _pools(blocks, classes, n):
        near = pool[_neighbours(block_level[pool], sku_level[rows], neighbours)]
        paths = min(paths, near.shape[1])
        for a in range(0, len(rows), CHUNK):
            i = rows[a : a + CHUNK]
            m = mu[i, None, :]
            sample = path_values(m, resid[near[a : a + CHUNK]] * width[i, None, None])
            # Each path's total rounded to whole units, as demand is counted: a slow mover's
            # paths are then mostly 0, and its P80 is 0 when most of its weeks sell nothing
            # (rounding the quantile up instead would ask for a unit most cycles never need).
            out[i] = upper_quantiles(np.rint(sample.sum(axis=2)), qs)
            lead_out[i] = upper_quantiles(np.rint(sample[:, :, :lead_days].sum(axis=2)), qs)
    out = np.maximum.accumulate(out, axis=1).clip(0.0, None)
    lead_out = np.maximum.accumulate(lead_out, axis=1).clip(0.0, None)
    return LeadTimeDemand(
        days=days,
        lead_days=lead_days,
        mean=mu.sum(axis=1),
        levels=[float(q) for q in qs],
        quantiles=out,
        lead_quantiles=lead_out,
        lead_mean=mu[:, :lead_days].sum(axis=1),
        paths=int(min(paths, len(blocks))),
    )


@dataclass
class Policy:
    """(R, S) quantities per SKU at one service level."""

    mean: np.ndarray
    safety_stock: np.ndarray
    reorder_point: np.ndarray
    order_up_to: np.ndarray
    suggested_order: np.ndarray


def policy(
    demand: LeadTimeDemand,
    service_level: float,
    on_hand: np.ndarray | float = 0.0,
    on_order: np.ndarray | float = 0.0,
) -> Policy:
    """Order-up-to S (the service-level quantile over lead + review), safety stock S - mean,
    reorder point (the quantile over the lead time) and the order that lifts the position to S."""
    if service_level not in demand.levels:
        raise ValueError(f"service level {service_level} was not among the computed levels")
    i = demand.levels.index(service_level)
    s_up = demand.quantiles[:, i]
    position = np.asarray(on_hand, dtype=np.float64) + np.asarray(on_order, dtype=np.float64)
    return Policy(
        mean=demand.mean,
        safety_stock=s_up - demand.mean,
        reorder_point=demand.lead_quantiles[:, i],
        order_up_to=s_up,
        suggested_order=np.maximum(0.0, np.ceil(s_up - position - 1e-9)),
    )


def check_service_level(service_level: float) -> None:
    """ValueError unless the level lies strictly inside SERVICE_LEVEL_RANGE."""
    lo, hi = SERVICE_LEVEL_RANGE
    if not lo < service_level < hi:
        raise ValueError(f"service_level must lie strictly between {lo} and {hi}")


def with_level(levels: Sequence[float], service_level: float) -> list[float]:
    """The levels to compute: the defaults and the service level, sorted, without repeats."""
    return sorted({*(float(q) for q in levels), float(service_level)})


# ---------------------------------------------------------------- the policy replayed on history


def _block_totals(blocks: ResidualBlocks, days: int) -> tuple[np.ndarray, np.ndarray]:
    y = blocks.yhat[:, :days] + blocks.scaled[:, :days] * np.sqrt(blocks.yhat[:, :days] + 1.0)
    return np.rint(y).sum(axis=1), blocks.yhat[:, :days]


def _summed_daily(cal: QuantileCalibrator, yhat: np.ndarray, level: float) -> np.ndarray:
    """The shortcut: each day's calibrated ``level`` quantile, summed over the days."""
    n, days = yhat.shape
    horizon = np.tile(np.arange(1, days + 1), n)
    q = cal.predict(yhat.reshape(-1), horizon, [level]).reshape(n, days)
    return np.asarray(q.sum(axis=1))


def _scores(demand: np.ndarray, level: np.ndarray, classes: np.ndarray) -> dict[str, Any]:
    def one(d: np.ndarray, s: np.ndarray) -> dict[str, Any]:
        total = float(d.sum())
        return {
            "cycles": len(d),
            "cycle_service_level": float(np.mean(d <= s)) if len(d) else None,
            # Counts make P(D <= S) jump: a calibrated S has P(D < S) <= target <= P(D <= S).
            "share_below": float(np.mean(d < s)) if len(d) else None,
            "fill_rate": float(np.minimum(d, s).sum() / total) if total > 0 else None,
        }

    out = one(demand, level)
    out["by_demand_class"] = {
        str(c): one(demand[classes == c], level[classes == c]) for c in sorted(set(classes))
    }
    return out


def replay(
    rows: pd.DataFrame,
    *,
    service_levels: Sequence[float] = (0.8, 0.9, 0.95),
    lead_times: Sequence[int] = (3, 7, 14),
    review_days: int = 0,
    neighbours: int = NEIGHBOURS,
) -> dict[str, Any]:
    """The policy replayed at every backtest cut-off: was demand over lead + review covered?

    At each fold the order-up-to level comes from the forecast made at that cut-off and residual
    blocks of the other folds only (cross-conformal: a fold never calibrates itself). Against it,
    the shortcut a user would build: the sum of the calibrated daily quantiles over the same days
    (the calibrator, too, fitted on the other folds). Reported overall and by demand class.
    Each SKU borrows from its own demand class as when serving (``lead_time_demand``).
    """
    blocks = ResidualBlocks.from_backtest(rows)
    folds = np.unique(blocks.fold)
    if len(folds) < 2:
        raise NoResidualBlocks("the replay needs at least two folds (one calibrates the other)")
    results: list[dict[str, Any]] = []
    calibrators = {}
    for fold in folds:
        fit = rows[rows["fold"] != fold]
        calibrators[fold] = QuantileCalibrator().fit(
            fit["y"].to_numpy(), fit["yhat"].to_numpy(), fit["horizon"].to_numpy()
        )
    for lead in lead_times:
        days = lead + review_days
        if days > blocks.horizon:
            continue
        actual, yhat_days = _block_totals(blocks, days)
        for level in service_levels:
            ours = np.empty(len(blocks))
            naive = np.empty(len(blocks))
            for fold in folds:
                mine = blocks.fold == fold
                other = blocks.subset(~mine)
                demand = lead_time_demand(
                    yhat_days[mine],
                    other,
                    lead_days=lead,
                    review_days=review_days,
                    levels=[level],
                    neighbours=neighbours,
                    classes=blocks.demand_class[mine],
                )
                ours[mine] = demand.quantiles[:, 0]
                naive[mine] = _summed_daily(calibrators[fold], yhat_days[mine], level)
            mine_scores = _scores(actual, ours, blocks.demand_class)
            naive_scores = _scores(actual, naive, blocks.demand_class)
            results.append(
                {
                    "lead_time_days": lead,
                    "review_days": review_days,
                    "service_level": level,
                    "achieved": mine_scores,
                    "summed_daily_quantiles": naive_scores,
                    "mean_order_up_to": float(ours.mean()),
                    "mean_order_up_to_summed": float(naive.mean()),
                }
            )
    return {
        "policy": "(R, S) periodic review: order up to the service-level quantile of demand "
        "over lead time + review",
        "folds": len(folds),
        "blocks": len(blocks),
        "paths_per_sku": min(neighbours, len(blocks)),
        "settings": results,
    }
