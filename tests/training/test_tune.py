"""`salesfc tune`'s search: bounded by trials and time, defaults first, best parameters kept."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.frames import make_history, make_products
from training.engine.runner import LocalRunner
from training.errors import TrainingError
from training.options import TrainOptions
from training.tune import SPACE, learned_model, sample, tune, tuned_options

OPTIONS = TrainOptions(
    models=["seasonal_naive", "lgbm_tweedie"],
    strategy="direct",
    horizon=14,
    folds=1,
    model_params={"lgbm_tweedie": {"n_estimators": 10, "num_threads": 1}},
)


@pytest.fixture(scope="module")
def data() -> LocalRunner:
    history = make_history(n_skus=4, n_days=150, seed=6)
    return LocalRunner(history, make_products(sorted(history["sku"].unique())))


def test_samples_stay_in_bounds() -> None:
    rng = np.random.default_rng(1)
    for _ in range(50):
        params = sample(rng)
        assert set(params) == set(SPACE)
        for name, spec in SPACE.items():
            if spec[0] == "choice":
                assert params[name] in spec[1]
            else:
                assert spec[1] <= params[name] <= spec[2]


def test_search_keeps_the_best_and_starts_from_the_defaults(data: LocalRunner) -> None:
    seen: list[str] = []
    found = tune(data, OPTIONS, trials=3, max_minutes=60, progress=seen.append)
    assert [t["trial"] for t in found.trials] == [1, 2, 3] and len(seen) == 3
    assert found.trials[0]["params"] == {}
    assert found.best["score"] == min(t["score"] for t in found.trials)
    tuned = tuned_options(OPTIONS, found)
    params = tuned.model_params["lgbm_tweedie"]
    assert params["n_estimators"] == 10  # what the user fixed is kept
    assert all(params[k] == v for k, v in found.best["params"].items())
    doc = found.to_dict()
    assert doc["best_score"] <= doc["default_score"] and len(doc["trials"]) == 3


def test_time_budget_stops_the_search(data: LocalRunner) -> None:
    found = tune(data, OPTIONS, trials=50, max_minutes=1e-6)
    assert len(found.trials) == 1  # the defaults always run; the next would overrun


def test_needs_a_learned_model() -> None:
    with pytest.raises(TrainingError, match="lgbm"):
        learned_model(TrainOptions(models=["seasonal_naive", "tsb"]))


class _Spy(LocalRunner):
    """A local runner that notes the lag floors of every candidate it backtests."""

    seen: list[tuple[int, ...] | None]

    def backtest(self, candidates, **kw):  # type: ignore[no-untyped-def]
        self.seen.extend(c.floors for c in candidates)
        return super().backtest(candidates, **kw)


def test_the_search_backtests_the_chosen_lag_floors(data: LocalRunner) -> None:
    spy = _Spy(data.history, data.products)
    spy.seen = []
    short = TrainOptions(**{**vars(OPTIONS), "strategy": "multi", "lag_floors": (1, 7, 14)})
    found = tune(spy, short, trials=2, max_minutes=60)
    assert spy.seen == [(1, 7, 14), (1, 7, 14)]
    assert tuned_options(short, found).lag_floors == (1, 7, 14)  # and the final train keeps them
    default = TrainOptions(**{**vars(OPTIONS), "strategy": "multi"})
    tune(spy, default, trials=1, max_minutes=60)
    assert spy.seen[-1] == default.floors
