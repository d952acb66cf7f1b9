"""The promotion policy: when a freshly trained challenger becomes the champion.

One rule for `salesfc train` and the retrain worker alike: the challenger is promoted if its
backtest score beats the champion's on the same selection metric (lower is better), if there is
no comparable champion, or if the caller forces it.
"""

from __future__ import annotations

from typing import Any

from training.registry import Registry


def gate(
    registry: Registry, version: str, score: float, metric: str, force: bool
) -> dict[str, Any]:
    """Promote the challenger if it beats the champion (lower is better) or if forced."""
    current = registry.champion()
    old_score = None
    if current is not None:
        old = registry.get(current).metrics
        old_score = old.get("selection_score") if old.get("selection_metric") == metric else None
    better = current is None or old_score is None or score < float(old_score)
    promote = force or better
    if promote:
        why = "forced" if force and not better else f"{metric} {score:.4f} vs {old_score}"
        registry.promote(version, reason=why)
    return {
        "challenger": version,
        "challenger_score": score,
        "champion_before": current,
        "champion_score": old_score,
        "metric": metric,
        "promoted": promote,
        "forced": force,
        "champion_after": registry.champion(),
    }
