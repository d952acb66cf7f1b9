"""The promotion policy: a challenger is promoted only if it beats the champion or is forced."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.test_registry import make
from training.promotion import gate
from training.registry import Registry

OLD = "20260101T000000Z-aaaa"
NEW = "20260201T000000Z-bbbb"


@pytest.fixture
def models(tmp_path: Path) -> Path:
    make(tmp_path / "models", NEW)
    return tmp_path / "models"


def _champion(models: Path, score: float, metric: str = "rmsse") -> Registry:
    """A registry whose champion OLD scored `score` on `metric` in its backtest."""
    make(models, OLD, selection_score=score, selection_metric=metric)  # type: ignore[arg-type]
    registry = Registry(models)
    registry.promote(OLD, reason="first")
    return registry


def test_no_champion_promotes_the_challenger(models: Path) -> None:
    registry = Registry(models)
    verdict = gate(registry, NEW, 0.9, "rmsse", force=False)
    assert verdict["promoted"] and verdict["champion_before"] is None
    assert registry.champion() == NEW == verdict["champion_after"]


def test_a_worse_challenger_keeps_the_champion(models: Path) -> None:
    registry = _champion(models, 0.8)
    verdict = gate(registry, NEW, 0.85, "rmsse", force=False)
    assert not verdict["promoted"] and not verdict["forced"]
    assert verdict["champion_score"] == 0.8
    assert registry.champion() == OLD == verdict["champion_after"]


def test_a_better_challenger_is_promoted_with_both_scores(models: Path) -> None:
    registry = _champion(models, 0.8)
    verdict = gate(registry, NEW, 0.75, "rmsse", force=False)
    assert verdict["promoted"] and verdict["champion_before"] == OLD
    assert registry.champion() == NEW
    assert registry.history()[0]["reason"] == "rmsse 0.7500 vs 0.8"


def test_forced_promotes_whatever_the_score(models: Path) -> None:
    registry = _champion(models, 0.5)
    verdict = gate(registry, NEW, 0.9, "rmsse", force=True)
    assert verdict["promoted"] and verdict["forced"]
    assert registry.champion() == NEW
    assert registry.history()[0]["reason"] == "forced"


def test_a_champion_scored_on_another_metric_is_not_comparable(models: Path) -> None:
    registry = _champion(models, 0.1, metric="wape")
    verdict = gate(registry, NEW, 0.9, "rmsse", force=False)
    assert verdict["champion_score"] is None and verdict["promoted"]
