"""Totals above the SKU (category, store, category x store, the whole catalogue) that add up.

Means are bottom-up: a total's mean is the sum of its SKUs' means, so every level agrees with the
SKU forecasts to the cent. Quantiles are not: a P90 summed over SKUs is the P90 of a total only if
all SKUs always err the same way together. They come from joint sample paths built by the
sampler of ``training.inventory`` (``y* = max(0, mu + r * sqrt(mu + 1))``, except that a
residual is never amplified: ``total_paths``), with the cross-SKU dependence kept: every SKU of a
path reads its residuals at the SAME backtest cut-off (its own block where the backtest has it,
else the nearest-level block of that cut-off), so a holiday, a store's bad fortnight or a
chain-wide drift moves all of them at once, as it moved the actuals. Each cut-off's blocks are
read at every cyclic shift of their days (day h takes the residual of day
``(h + shift) mod horizon``), which turns F cut-offs into F x horizon joint paths while keeping
the days' and the SKUs' dependence inside each path. Each path's total is rounded to whole units.
The shifts permute a cut-off's days, so a path's sum over the whole horizon takes one value per
cut-off: no quantiles are given for the horizon's total (F values are no distribution).

MinT reconciliation was measured against this (bench/aggregate.py, docs/benchmarks.md, Totals);
the figures there say why the means stay bottom-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from training.inventory import ResidualBlocks, upper_quantiles
from training.predict import quantile_column
from training.quantiles import QuantileCalibrator

Level = Literal["total", "category", "store", "category_store"]
LEVELS: tuple[str, ...] = get_args(Level)
TOTAL_KEY = "total"
# category_store keys are "<category>/<store>" (neither holds a "/" in the exports seen so far).
SEPARATOR = "/"
NO_VALUE = "(none)"
# SKUs per vectorised step: bounds the (skus x paths x days) array to a few tens of MB.
CHUNK = 256


class UnknownLevel(ValueError):
    """A level the hierarchy does not have."""


def group_keys(products: pd.DataFrame, level: str) -> np.ndarray:
    """The key of each product's group at ``level`` (products as ``read_products`` gives them)."""
    if level not in LEVELS:
        raise UnknownLevel(f"unknown level {level!r}: choose from {', '.join(LEVELS)}")
    n = len(products)
    if level == "total":
        return np.full(n, TOTAL_KEY, dtype=object)

    def column(name: str) -> np.ndarray:
        return products[name].fillna(NO_VALUE).astype(str).to_numpy(dtype=object)

    if level == "category_store":
        return np.asarray(
            [
                f"{c}{SEPARATOR}{s}"
                for c, s in zip(column("category"), column("store"), strict=True)
            ],
            dtype=object,
        )
    return column(level)


@dataclass
class Totals:
    """Daily totals of groups of SKUs: coherent means, quantiles from joint sample paths."""

    keys: list[str]
    skus: np.ndarray  # (groups,) SKUs in each group
    levels: list[float]
    mean: np.ndarray  # (groups, days) the sum of the SKUs' means
    quantiles: np.ndarray  # (groups, days, levels) whole units, non-decreasing in the level
    period_mean: np.ndarray  # (groups,) the sum over the days
    paths: int


def joint_totals(
    means: np.ndarray,
    codes: np.ndarray,
    keys: Sequence[str],
    skus: Sequence[str] | np.ndarray,
    blocks: ResidualBlocks,
    *,
    levels: Sequence[float],
    widen: np.ndarray | float = 1.0,
) -> Totals:
    """Totals of the groups ``keys`` from SKU daily means (skus, days), day 1 first.

    ``codes[i]`` is SKU i's group (an index into ``keys``); a NaN mean is a day the SKU has no
    forecast (before its launch, after its end): it adds nothing, to the mean or to the paths.
    ``widen`` multiplies the residuals per SKU (cold-start SKUs pass their measured widening).
    """
    raw = np.asarray(means, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[0] != len(codes) or len(skus) != len(codes):
        raise ValueError(f"means {raw.shape} do not match {len(codes)} codes and SKUs")
    n, days = raw.shape
    if days > blocks.horizon:
        raise ValueError(f"{days} days exceed the backtest horizon of {blocks.horizon}")
    qs = np.asarray(levels, dtype=np.float64)
    if len(qs) == 0 or np.any((qs <= 0) | (qs >= 1)):
        raise ValueError("levels must lie strictly between 0 and 1")
    present = np.isfinite(raw)
    mu = np.where(present, np.clip(raw, 0.0, None), 0.0)
    groups = len(keys)
    codes = np.asarray(codes, dtype=np.int64)
    onehot = (codes[None, :] == np.arange(groups)[:, None]).astype(np.float64)  # (groups, n)
    width = np.broadcast_to(np.asarray(widen, dtype=np.float64), (n,))

    level = mu.sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    joint = blocks.joint(np.asarray(skus, dtype=object), level)  # (folds, n)
    hb = blocks.horizon
    shift = (np.arange(days)[None, :] + np.arange(hb)[:, None]) % hb  # (shifts, days)
    n_paths = joint.shape[0] * hb
    totals = np.zeros((groups, n_paths, days))
    for a in range(0, n, CHUNK):
        b = min(a + CHUNK, n)
        picked = joint[:, a:b]  # (folds, c)
        r = np.moveaxis(blocks.scaled[picked][:, :, shift], 1, 0)  # (c, folds, shifts, days)
        r = r.reshape(b - a, n_paths, days) * width[a:b, None, None]
        seen = np.moveaxis(blocks.yhat[picked][:, :, shift], 1, 0).reshape(b - a, n_paths, days)
        paths = total_paths(mu[a:b, None, :], r, seen) * present[a:b, None, :]
        totals += np.tensordot(onehot[:, a:b], paths, axes=1)
    daily = np.rint(totals)  # (groups, paths, days)
    q = upper_quantiles(np.moveaxis(daily, 1, 2), qs)  # (groups, days, levels)
    mean = onehot @ mu
    return Totals(
        keys=list(keys),
        skus=onehot.sum(axis=1).astype(np.int64),
        levels=[float(x) for x in qs],
        mean=mean,
        quantiles=np.maximum.accumulate(q, axis=2).clip(0.0, None),
        period_mean=mean.sum(axis=1),
        paths=n_paths,
    )


def total_paths(means: np.ndarray, scaled: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """SKU paths for totals: ``max(0, mu + r * sqrt(min(mu, yhat) + 1))``, ``yhat`` the
    forecast the residual ``r`` was observed against.

    The SKU sampler (``training.inventory.path_values``) rescales a residual by the level now,
    ``sqrt(mu + 1)``: right for noise around a level, but a residual that is a level the
    forecast missed (a SKU whose demand jumped from 3 to 248 a day) is then multiplied by the
    ratio of the levels once the model has caught up (mu 44 gave it +786 units instead of the
    +245 it was), and a total adds those blown-up surges of its SKUs: on m5_tiny they made the
    catalogue total's P10-P90 half as wide again as its backtest errors (docs/benchmarks.md,
    Totals). So a residual is never amplified: its units as seen where the level rose, shrunk
    like the sampler's where it fell.
    """
    return np.maximum(means + scaled * np.sqrt(np.minimum(means, seen) + 1.0), 0.0)


def totals_frame(
    forecasts: pd.DataFrame,
    products: pd.DataFrame,
    blocks: ResidualBlocks,
    *,
    levels: Sequence[str],
    quantiles: Sequence[float],
    cold_widen: float = 1.0,
) -> pd.DataFrame:
    """level, key, date, skus, mean, one column per quantile: the totals of a forecast-all frame.

    ``forecasts`` has sku, date, mean and cold_start (what ``forecast_all`` returns).
    """
    frame = forecasts[["sku", "date", "mean", "cold_start"]]
    wide = frame.pivot(index="sku", columns="date", values="mean").sort_index(axis=1)
    skus = wide.index.to_numpy(dtype=object)
    dates = list(wide.columns)
    cold = frame.groupby("sku")["cold_start"].any().reindex(skus).to_numpy(dtype=bool)
    attrs = products.set_index("sku").reindex(skus).reset_index()
    means = wide.to_numpy(dtype=np.float64)
    widen = np.where(cold, cold_widen, 1.0)
    parts = []
    for level in levels:
        keys_of = group_keys(attrs, level)
        codes, uniq = pd.factorize(keys_of, sort=True)
        tot = joint_totals(means, codes, list(uniq), skus, blocks, levels=quantiles, widen=widen)
        g, d = tot.mean.shape
        part = pd.DataFrame(
            {
                "level": level,
                "key": np.repeat(np.asarray(tot.keys, dtype=object), d),
                "date": np.tile(np.asarray(dates, dtype=object), g),
                "skus": np.repeat(tot.skus, d),
                "mean": tot.mean.reshape(-1),
            }
        )
        for i, q in enumerate(tot.levels):
            part[quantile_column(q)] = tot.quantiles[:, :, i].reshape(-1)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def replay(
    rows: pd.DataFrame,
    products: pd.DataFrame,
    *,
    levels: Sequence[str] = ("category", "store", "total"),
    band: tuple[float, float] = (0.1, 0.9),
) -> dict[str, dict[str, float | int]]:
    """The totals' band replayed on the backtest, per level: at each cut-off, the P-lo..P-hi of
    every group's daily total from the other cut-offs' residuals (cross-conformal: a fold never
    calibrates itself), against the actual totals; beside it the sum of the SKUs' calibrated
    quantiles (``QuantileCalibrator`` fitted on the other folds too).

    ``rows``: one model's backtest rows (fold, sku, horizon, y, yhat).
    """
    blocks = ResidualBlocks.from_backtest(rows)
    folds = np.unique(blocks.fold)
    if len(folds) < 2:
        raise ValueError("the replay needs at least two folds (one calibrates the other)")
    attrs = products.set_index("sku")
    inside: dict[str, list[np.ndarray]] = {lv: [] for lv in levels}
    summed: dict[str, list[np.ndarray]] = {lv: [] for lv in levels}
    for fold in folds.tolist():
        mine = blocks.fold == fold
        skus = blocks.sku[mine]
        yhat = blocks.yhat[mine]
        y = yhat + blocks.scaled[mine] * np.sqrt(yhat + 1.0)
        other = blocks.subset(~mine)
        fit = rows[rows["fold"] != fold]
        cal = QuantileCalibrator().fit(
            fit["y"].to_numpy(), fit["yhat"].to_numpy(), fit["horizon"].to_numpy()
        )
        days = yhat.shape[1]
        h = np.tile(np.arange(1, days + 1), len(skus))
        per_sku = cal.predict(yhat.reshape(-1), h, list(band)).reshape(len(skus), days, 2)
        group_rows = attrs.reindex(skus).reset_index()
        for level in levels:
            codes, uniq = pd.factorize(group_keys(group_rows, level), sort=True)
            tot = joint_totals(yhat, codes, list(uniq), skus, other, levels=band)
            onehot = (codes[None, :] == np.arange(len(uniq))[:, None]).astype(np.float64)
            actual = onehot @ np.rint(y)
            lo, hi = tot.quantiles[:, :, 0], tot.quantiles[:, :, 1]
            inside[level].append(((actual >= lo) & (actual <= hi)).ravel())
            s_lo = np.tensordot(onehot, per_sku[:, :, 0], axes=1)
            s_hi = np.tensordot(onehot, per_sku[:, :, 1], axes=1)
            summed[level].append(((actual >= s_lo) & (actual <= s_hi)).ravel())
    out: dict[str, dict[str, float | int]] = {}
    for level in levels:
        joint = np.concatenate(inside[level])
        out[level] = {
            "points": len(joint),
            "coverage_joint": float(joint.mean()),
            "coverage_summed": float(np.concatenate(summed[level]).mean()),
        }
    return out
