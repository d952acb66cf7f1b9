"""What ships after a backtest: always the backtest's best, baselines and the ensemble included,
and per demand segment a baseline where the backtest says it forecasts that segment better.

``choose`` reads a ``BacktestResult`` and returns a ``Selection``: the models whose mean is the
forecast (one model, or an ensemble of at most one learned model and baselines, so the bundle
holds one fitted forecaster), and the demand classes (smooth, erratic, intermittent, lumpy) that
a baseline answers instead. The shipped composition is scored on the same backtest rows and
added to the result under its own name, so calibration, coverage and the promotion gate see
exactly what is served. ``sku_fallback`` maps each SKU of a fallback class (classified on the
full training history by ``demand_classes``, as the backtest classified them on its first fold's)
to its baseline. Selection reads only the backtest's rows and per-SKU figures, never the history,
so the local and the Dask runner (training.engine) share it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from training.backtest import BacktestResult, _score
from training.estimators import BASELINES
from training.metrics import evaluate, series_stats

# A baseline takes a segment over only when it beats the shipped model there by this share of
# the metric and the composition beats it overall: noise in a small segment moves nothing.
SEGMENT_MARGIN = 0.02
MIN_SEGMENT_ROWS = 280  # ten SKUs' 28 days


def is_baseline(name: str) -> bool:
    """Whether a backtest name is a feature-free baseline."""
    return name in BASELINES


@dataclass(frozen=True)
class Selection:
    """The shipped forecast: the mean of ``members``; SKUs of ``segments`` take a baseline."""

    name: str  # the backtest name of the shipped composition (what its score is)
    members: tuple[str, ...]  # backtest names of the averaged models
    segments: Mapping[str, str] = field(default_factory=dict)  # demand class -> baseline

    @property
    def learned(self) -> str | None:
        """The one learned member (what the bundle's forecaster is), or None."""
        found = [m for m in self.members if not is_baseline(m)]
        return found[0] if found else None

    @property
    def baselines(self) -> tuple[str, ...]:
        """Baselines the composition forecasts with (members and segment fallbacks)."""
        names = [m for m in self.members if is_baseline(m)] + list(self.segments.values())
        return tuple(dict.fromkeys(names))

    def to_dict(self) -> dict[str, object]:
        """For the manifest."""
        return {"name": self.name, "members": list(self.members), "segments": dict(self.segments)}


def members_of(result: BacktestResult, name: str) -> tuple[str, ...]:
    """The models behind a backtest name (an ensemble's members, or the model itself)."""
    return tuple(result.ensembles.get(name, (name,)))


def _eligible(result: BacktestResult, name: str) -> bool:
    """A bundle holds one fitted forecaster: at most one learned model per composition."""
    return sum(not is_baseline(m) for m in members_of(result, name)) <= 1


def choose(result: BacktestResult, margin: float = SEGMENT_MARGIN) -> Selection:
    """The backtest's best eligible model, with per-segment baseline fallbacks where they win.

    A composition with fallbacks is added to ``result`` (predictions, reports and ranking).
    """
    ranked = [n for n in result.ranking if _eligible(result, n)]
    best = ranked[0]
    members = members_of(result, best)
    if all(is_baseline(m) for m in members):
        return Selection(best, members)
    preds = result.predictions
    mine = preds[preds["model"] == best]
    segments: dict[str, str] = {}
    for cls, rows in mine.groupby("demand_class", sort=True):
        if len(rows) < MIN_SEGMENT_ROWS:
            continue
        own = _segment_score(result, best, str(cls))
        scores: dict[str, float] = {}
        for b in result.reports:
            value = _segment_score(result, b, str(cls)) if is_baseline(b) else None
            if value is not None:
                scores[b] = value
        if not scores or own is None:
            continue
        winner = min(scores, key=scores.__getitem__)
        if scores[winner] < own * (1 - margin):
            segments[str(cls)] = winner
    if not segments or result.scale_stats is None:
        return Selection(best, members)
    name = f"{best}+fallback(" + ",".join(f"{c}:{b}" for c, b in segments.items()) + ")"
    composed = _compose(preds, best, segments)
    report = evaluate(composed, train_stats=result.scale_stats)
    if _score(report["overall"], result.metric) >= result.score(best):
        return Selection(best, members)
    result.predictions = pd.concat([preds, composed.assign(model=name)], ignore_index=True)
    result.reports[name] = report
    result.ensembles[name] = list(members)
    result.ranking = sorted(
        result.reports, key=lambda n: _score(result.reports[n]["overall"], result.metric)
    )
    return Selection(name, members, segments)


def _segment_score(result: BacktestResult, model: str, cls: str) -> float | None:
    block = result.reports[model].get("by_segment", {}).get("demand_class", {}).get(cls)
    if not block:
        return None
    value = _score(block, result.metric)
    return None if value == float("inf") else value


def _compose(preds: pd.DataFrame, best: str, segments: Mapping[str, str]) -> pd.DataFrame:
    """The best model's rows with each fallback segment's rows from its baseline."""
    base = preds[preds["model"] == best]
    keep = base[~base["demand_class"].isin(list(segments))]
    parts = [keep]
    for cls, baseline in segments.items():
        parts.append(preds[(preds["model"] == baseline) & (preds["demand_class"] == cls)])
    out = pd.concat(parts, ignore_index=True).drop(columns="model")
    return out.sort_values(["fold", "sku", "date"], kind="stable", ignore_index=True)


def demand_classes(history: pd.DataFrame) -> pd.Series:
    """Each SKU's demand class (smooth, erratic, intermittent, lumpy, no_demand) on the known
    units of ``history``; per SKU, so a partitioned history's classes are its partitions'."""
    stats = series_stats(history, known_only=True)
    return stats["demand_class"].fillna("no_demand").astype(str)


def sku_fallback(selection: Selection, classes: pd.Series) -> dict[str, str]:
    """SKU -> baseline for the SKUs of the fallback segments (``classes``: ``demand_classes``
    of the full training history, sku -> class)."""
    if not selection.segments:
        return {}
    picked = classes[classes.isin(list(selection.segments))]
    return {str(sku): selection.segments[str(cls)] for sku, cls in picked.items()}
