"""The promotion gate: a challenger replaces the champion only when it wins like with like.

Two backtest scores compare only when they were measured alike: the same metric on the same
cut-offs (hence the same folds, step and horizon) over the same history. ``compare`` takes the
champion's stored score when its manifest says it was measured so (the cheap case) and otherwise
re-backtests the champion's configuration (its model, strategy and parameters, refitted per fold
as every backtest does) on the challenger's folds. When no like-for-like score can be had the
gate refuses (fails closed) and says why; ``force`` is the only way around it. One rule for
`salesfc train` and the retrain job alike.
"""

from __future__ import annotations

import copy
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from training.backtest import BacktestResult
from training.bundle import BundleError, Manifest
from training.engine.runner import BacktestFn
from training.forecaster import Forecaster
from training.registry import Registry, RegistryError

log = logging.getLogger(__name__)
ProgressFn = Callable[[str], None]
STORED = "stored"
REBACKTESTED = "re-backtested"


@dataclass(frozen=True)
class Scoring:
    """How a backtest score was measured; two scores compare only when these are equal."""

    metric: str
    cutoffs: tuple[str, ...]  # ISO dates, oldest first: the folds, their step and the data's end
    horizon: int
    data_start: str  # with sku_count: the same history (scaled metrics' scales start there)
    sku_count: int

    @property
    def folds(self) -> int:
        """Number of backtest folds."""
        return len(self.cutoffs)

    @classmethod
    def of_manifest(cls, manifest: Manifest) -> Scoring | None:
        """How a bundle's stored score was measured, or None when its manifest does not say."""
        try:
            return cls(
                metric=str(manifest.metrics["selection_metric"]),
                cutoffs=tuple(str(c) for c in manifest.metrics["cutoffs"]),
                horizon=int(manifest.strategy["horizon"]),
                data_start=manifest.data_start,
                sku_count=manifest.sku_count,
            )
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Comparison:
    """The challenger's and the champion's scores measured alike, or why they cannot be."""

    scoring: Scoring
    challenger_model: str
    challenger_score: float | None
    champion: str | None  # the champion's version when the scores were taken
    champion_model: str | None = None
    champion_score: float | None = None
    champion_scored: str | None = None  # STORED or REBACKTESTED
    refused: str | None = None  # why no like-for-like comparison could be made

    def to_dict(self) -> dict[str, Any]:
        """Both scores and how they were measured, JSON-ready (manifest and job result)."""
        return {
            "metric": self.scoring.metric,
            "cutoffs": list(self.scoring.cutoffs),
            "folds": self.scoring.folds,
            "horizon": self.scoring.horizon,
            "challenger_model": self.challenger_model,
            "challenger_score": self.challenger_score,
            "compared_with": self.champion,
            "champion_model": self.champion_model,
            "champion_score": self.champion_score,
            "champion_scored": self.champion_scored,
            "refused": self.refused,
        }


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _unfitted(fitted: Forecaster, horizon: int) -> Forecaster:
    """The champion's configuration, unfitted, for this horizon: what a backtest refits."""
    params = {
        name: copy.deepcopy(getattr(fitted, name, p.default))
        for name, p in inspect.signature(Forecaster.__init__).parameters.items()
        if name != "self"
    }
    params["horizon"] = horizon
    return Forecaster(**params)


def compare(
    registry: Registry,
    backtest: BacktestFn,
    result: BacktestResult,
    challenger_model: str,
    scoring: Scoring,
    *,
    step: int | None = None,
    progress: ProgressFn | None = None,
) -> Comparison:
    """Score the registry's champion as the challenger was scored (``result``, by ``backtest``
    over the same history: a runner's, local or on a cluster)."""
    base = Comparison(
        scoring, challenger_model, _finite(result.score(challenger_model)), registry.champion()
    )
    champion = base.champion
    if champion is None:
        return base
    if base.challenger_score is None:
        return replace(base, refused=f"the challenger's {scoring.metric} is undefined")
    try:
        manifest = registry.get(champion)
    except (BundleError, RegistryError) as exc:
        return replace(base, refused=f"champion {champion} cannot be read: {exc}")
    stored = _finite(manifest.metrics.get("selection_score"))
    if stored is not None and Scoring.of_manifest(manifest) == scoring:
        model = manifest.metrics.get("champion_model") or manifest.params.get("model")
        return replace(
            base, champion_model=str(model), champion_score=stored, champion_scored=STORED
        )
    return _rebacktest(registry, champion, backtest, base, step, progress)


def _rebacktest(
    registry: Registry,
    champion: str,
    backtest: BacktestFn,
    base: Comparison,
    step: int | None,
    progress: ProgressFn | None,
) -> Comparison:
    scoring = base.scoring
    try:
        fitted = registry.load(champion).artifacts.get("model")
    except (BundleError, RegistryError) as exc:
        return replace(base, refused=f"champion {champion} cannot be loaded to re-backtest: {exc}")
    if not isinstance(fitted, Forecaster):
        return replace(base, refused=f"champion {champion} holds no forecaster to re-backtest")
    candidate = _unfitted(fitted, scoring.horizon)
    del fitted  # the fitted trees are not needed while the configuration is refitted per fold
    if progress:
        progress(f"champion {champion}: re-backtesting {candidate.name} on the same folds")
    try:
        again = backtest(
            [candidate],
            folds=scoring.folds,
            horizon=scoring.horizon,
            step=step,
            metric=scoring.metric,
            progress=progress,
        )
    except Exception as exc:  # whatever stops the re-backtest, the gate must not promote blindly
        log.warning("re-backtesting champion %s failed", champion, exc_info=True)
        return replace(
            base, refused=f"re-backtesting champion {champion} failed: {type(exc).__name__}: {exc}"
        )
    cutoffs = tuple(c.date().isoformat() for c in again.cutoffs)
    if cutoffs != scoring.cutoffs:  # the same history, folds and step give the same cut-offs
        return replace(base, refused=f"champion {champion} was re-backtested on other cut-offs")
    score = _finite(again.score(candidate.name))
    if score is None:
        return replace(base, refused=f"champion {champion}'s {scoring.metric} is undefined")
    return replace(
        base, champion_model=candidate.name, champion_score=score, champion_scored=REBACKTESTED
    )


def _measured(c: Comparison) -> str:
    return f"{c.scoring.folds} fold(s) of {c.scoring.horizon} days to {c.scoring.cutoffs[-1]}"


def gate(registry: Registry, version: str, comparison: Comparison, force: bool) -> dict[str, Any]:
    """Promote the challenger if it beats the champion like for like, or if forced.

    Returns the verdict with both scores, the metric, the cut-offs and the decision in words.
    """
    current = registry.champion()
    refused = comparison.refused
    if current != comparison.champion:
        refused = (
            f"the champion changed from {comparison.champion} to {current} while the "
            "challenger trained"
        )
    metric = comparison.scoring.metric
    new, old = comparison.challenger_score, comparison.champion_score
    better = False
    if refused is None and current is None:
        better = True
        shown = "undefined" if new is None else f"{new:.4f}"
        why = f"no champion before; {metric} {shown} on {_measured(comparison)}"
    elif refused is None and new is not None and old is not None:
        better = new < old
        why = (
            f"{metric} {new:.4f} vs {old:.4f} (champion {current}, {comparison.champion_scored}) "
            f"on {_measured(comparison)}"
        )
    else:
        why = f"cannot compare with champion {current}: {refused}"
    promote = force or better
    if promote:
        registry.promote(version, reason=why if better else f"forced; {why}")
    if better:
        decision = f"promoted: {why}"
    elif promote:
        decision = f"promoted (forced): {why}"
    elif refused is not None:
        decision = f"not promoted, {why}"
    else:
        decision = f"champion {current} stays: {why}"
    return {
        "challenger": version,
        "champion_before": current,
        **comparison.to_dict(),
        "refused": refused,
        "promoted": promote,
        "forced": force,
        "champion_after": registry.champion(),
        "decision": decision,
    }
