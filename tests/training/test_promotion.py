"""The promotion gate: a challenger is promoted only if it beats the champion measured alike.

The rule's unit tests build comparisons by hand; the tests on a store (SQLite and PostgreSQL)
train a real champion and challengers on other metrics and folds, as issue #11 reported them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.training.test_registry import make
from training.backtest import run_backtest
from training.engine.runner import LocalRunner
from training.forecaster import Forecaster
from training.options import TrainOptions
from training.pipeline import load_history, train
from training.promotion import REBACKTESTED, STORED, Comparison, Scoring, gate
from training.registry import Registry
from training.synth import SynthConfig, generate, write_catalogue

OLD = "20260101T000000Z-aaaa"
NEW = "20260201T000000Z-bbbb"
SCORING = Scoring(
    metric="rmsse",
    cutoffs=("2016-03-13", "2016-03-27"),
    horizon=14,
    data_start="2015-01-01",
    sku_count=3,
)
TREES = {"n_estimators": 15, "num_leaves": 15, "min_data_in_leaf": 10}


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


def _measured(new: float, old: float | None, champion: str | None = OLD) -> Comparison:
    """A comparison as `compare` makes it when both scores were measured alike."""
    return Comparison(
        SCORING,
        "lgbm_tweedie/direct",
        new,
        champion,
        champion_model=None if champion is None else "lgbm_tweedie/multi",
        champion_score=old,
        champion_scored=None if champion is None else STORED,
    )


def test_no_champion_promotes_the_challenger(models: Path) -> None:
    registry = Registry(models)
    verdict = gate(registry, NEW, _measured(0.9, None, champion=None), force=False)
    assert verdict["promoted"] and verdict["champion_before"] is None
    assert registry.champion() == NEW == verdict["champion_after"]
    assert verdict["decision"].startswith("promoted: no champion before")


def test_a_worse_challenger_keeps_the_champion(models: Path) -> None:
    registry = _champion(models, 0.8)
    verdict = gate(registry, NEW, _measured(0.85, 0.8), force=False)
    assert not verdict["promoted"] and not verdict["forced"] and verdict["refused"] is None
    assert verdict["champion_score"] == 0.8 and verdict["challenger_score"] == 0.85
    assert registry.champion() == OLD == verdict["champion_after"]
    assert verdict["decision"].startswith(f"champion {OLD} stays: rmsse 0.8500 vs 0.8000")


def test_a_better_challenger_is_promoted_with_both_scores_and_folds(models: Path) -> None:
    registry = _champion(models, 0.8)
    verdict = gate(registry, NEW, _measured(0.75, 0.8), force=False)
    assert verdict["promoted"] and verdict["champion_before"] == OLD
    assert registry.champion() == NEW
    assert verdict["cutoffs"] == list(SCORING.cutoffs) and verdict["folds"] == 2
    assert registry.history()[0]["reason"] == (
        f"rmsse 0.7500 vs 0.8000 (champion {OLD}, stored) on 2 fold(s) of 14 days to 2016-03-27"
    )


def test_forced_promotes_whatever_the_score(models: Path) -> None:
    registry = _champion(models, 0.5)
    verdict = gate(registry, NEW, _measured(0.9, 0.5), force=True)
    assert verdict["promoted"] and verdict["forced"]
    assert registry.champion() == NEW
    assert registry.history()[0]["reason"].startswith("forced; rmsse 0.9000 vs 0.5000")


def test_a_refused_comparison_keeps_the_champion_unless_forced(models: Path) -> None:
    registry = _champion(models, 0.9)
    refused = Comparison(SCORING, "lgbm_tweedie/direct", 0.1, OLD, refused="no forecaster")
    verdict = gate(registry, NEW, refused, force=False)
    assert not verdict["promoted"] and verdict["refused"] == "no forecaster"
    assert verdict["champion_score"] is None and registry.champion() == OLD
    assert verdict["decision"] == f"not promoted, cannot compare with champion {OLD}: no forecaster"
    forced = gate(registry, NEW, refused, force=True)
    assert forced["promoted"] and registry.champion() == NEW
    assert registry.history()[0]["reason"].startswith("forced; cannot compare")


def test_a_champion_promoted_while_the_challenger_trained_is_not_compared(models: Path) -> None:
    registry = _champion(models, 0.8)
    verdict = gate(registry, NEW, _measured(0.1, None, champion=None), force=False)
    assert not verdict["promoted"] and registry.champion() == OLD
    assert (
        verdict["refused"]
        == f"the champion changed from None to {OLD} while the challenger trained"
    )


# --- on a store: real champions, challengers trained on other metrics and folds -----------------


@pytest.fixture
def store(engine: Engine) -> Engine:
    write_catalogue(engine, generate(SynthConfig(n_skus=8, n_days=200, seed=5)))
    return engine


def _options(**changes: Any) -> TrainOptions:
    base: dict[str, Any] = {
        "models": ["seasonal_naive", "lgbm_tweedie"],
        "strategy": "direct",
        "horizon": 14,
        "folds": 2,
        "model_params": {"lgbm_tweedie": TREES},
        "cold_start_share": 0.2,
    }
    return TrainOptions(**{**base, **changes})


def _crowned(store: Engine, models: Path) -> tuple[Registry, str]:
    """A registry whose champion is a LightGBM bundle scored by rmsse on 2 folds."""
    first = train(store, models, _options())
    registry = Registry(models)
    registry.promote(first.version, reason="test champion")
    return registry, first.version


def _champion_config_score(store: Engine, options: TrainOptions, metric: str) -> float:
    """What the champion's configuration scores on the challenger's folds, computed by hand."""
    history, products = load_history(store)
    config = Forecaster(
        model="lgbm_tweedie", strategy="direct", horizon=options.horizon, model_params=TREES
    )
    result = run_backtest(
        history, products, [config], folds=options.folds, horizon=options.horizon, metric=metric
    )
    return result.score(config.name)


def test_a_challenger_on_another_metric_meets_the_champion_rebacktested(
    store: Engine, tmp_path: Path
) -> None:
    """Issue #11: `--metric wape --models seasonal_naive` won "wape 0.8069 vs None"."""
    registry, champion = _crowned(store, tmp_path / "models")
    options = _options(metric="wape", models=["seasonal_naive"])
    outcome = train(store, tmp_path / "models", options, compare_with=registry)
    comparison = outcome.comparison
    assert comparison is not None and comparison.refused is None
    assert comparison.champion == champion and comparison.champion_scored == REBACKTESTED
    assert comparison.champion_model == "lgbm_tweedie/direct"
    expected = _champion_config_score(store, options, "wape")
    assert comparison.champion_score == pytest.approx(expected, rel=1e-9)
    assert comparison.scoring.metric == "wape"
    assert list(comparison.scoring.cutoffs) == outcome.metrics["cutoffs"]
    manifest = json.loads((outcome.path / "manifest.json").read_text())
    recorded = manifest["metrics"]["promotion"]
    assert recorded["champion_score"] == pytest.approx(expected, rel=1e-9)
    assert recorded["challenger_score"] == outcome.score and recorded["metric"] == "wape"
    assert recorded["folds"] == 2 and recorded["compared_with"] == champion
    verdict = gate(registry, outcome.version, comparison, force=False)
    better = outcome.score < expected
    assert verdict["promoted"] is better and verdict["champion_score"] is not None
    assert registry.champion() == (outcome.version if better else champion)


def test_a_challenger_on_fewer_folds_meets_the_champion_on_its_folds(
    store: Engine, tmp_path: Path
) -> None:
    """Issue #11: a 1-fold score was promoted over a stored 2-fold score."""
    registry, champion = _crowned(store, tmp_path / "models")
    stored = registry.get(champion).metrics
    options = _options(folds=1)
    outcome = train(store, tmp_path / "models", options, compare_with=registry)
    comparison = outcome.comparison
    assert comparison is not None and comparison.champion_scored == REBACKTESTED
    assert comparison.scoring.cutoffs == (stored["cutoffs"][-1],)
    expected = _champion_config_score(store, options, "rmsse")
    assert comparison.champion_score == pytest.approx(expected, rel=1e-9)
    assert comparison.champion_score != pytest.approx(stored["selection_score"], rel=1e-9)


def _after_first_backtest(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Challengers' backtests run; the champion's re-backtest (promotion asks for no ensemble)
    raises."""
    real = LocalRunner.backtest

    def challengers_only(self: LocalRunner, *args: Any, **kwargs: Any) -> Any:
        if "ensemble_top" not in kwargs:
            raise error
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LocalRunner, "backtest", challengers_only)


def test_stored_scores_measured_alike_are_not_recomputed(
    store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, champion = _crowned(store, tmp_path / "models")

    _after_first_backtest(monkeypatch, AssertionError("the stored score matches: no re-backtest"))
    outcome = train(store, tmp_path / "models", _options(), compare_with=registry)
    comparison = outcome.comparison
    assert comparison is not None and comparison.champion_scored == STORED
    assert comparison.champion_score == registry.get(champion).metrics["selection_score"]


def test_a_champion_that_cannot_be_rebacktested_is_refused(
    store: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    registry, champion = _crowned(store, models)

    _after_first_backtest(monkeypatch, ValueError("not enough history"))
    outcome = train(store, models, _options(metric="mae"), compare_with=registry)
    assert outcome.comparison is not None
    verdict = gate(registry, outcome.version, outcome.comparison, force=False)
    assert not verdict["promoted"] and registry.champion() == champion
    assert verdict["refused"] == (
        f"re-backtesting champion {champion} failed: ValueError: not enough history"
    )
    # a champion bundle without a forecaster (an old or foreign bundle): refused as well
    make(models, OLD, selection_score=0.01, selection_metric="mae")  # type: ignore[arg-type]
    registry.promote(OLD, reason="foreign bundle")
    outcome = train(store, models, _options(metric="mae", folds=1), compare_with=registry)
    assert outcome.comparison is not None
    assert outcome.comparison.refused == f"champion {OLD} holds no forecaster to re-backtest"
    assert not gate(registry, outcome.version, outcome.comparison, force=False)["promoted"]
    assert gate(registry, outcome.version, outcome.comparison, force=True)["promoted"]
    assert registry.champion() == outcome.version
