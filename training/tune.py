"""Hyperparameter search for the learned model: random search on the rolling-origin backtest.

Each trial backtests the learned candidate with one draw of LightGBM parameters on the folds
`salesfc train` would use, on the history a runner holds (read into this process, or partitioned
on a Dask cluster: training.engine); the first trial is the family's defaults, so the search can
only keep or improve them. It stops at ``trials`` or when the next trial would start after
``max_minutes``. ``salesfc tune`` then trains with the best parameters (they land in the bundle
manifest's ``params.model_params``, the trials in ``metrics.tuning``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from training.engine.runner import HistoryRunner
from training.errors import TrainingError
from training.estimators import family
from training.forecaster import Forecaster
from training.memory import release_large_blocks
from training.options import TrainOptions

ProgressFn = Callable[[str], None]

# (kind, low, high) or ("choice", values): bounds around the benchmarked defaults.
SPACE: dict[str, tuple[Any, ...]] = {
    "learning_rate": ("log", 0.02, 0.2),
    "num_leaves": ("choice", (15, 31, 63, 127)),
    "min_data_in_leaf": ("choice", (10, 20, 50, 100, 200)),
    "feature_fraction": ("uniform", 0.2, 0.9),
    "lambda_l2": ("log", 0.01, 10.0),
    "tweedie_variance_power": ("uniform", 1.05, 1.5),
}


@dataclass
class TuneResult:
    """The trials (parameters, score, seconds) and the best parameters."""

    model: str
    metric: str
    trials: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> dict[str, Any]:
        """The trial with the lowest score."""
        scored = [t for t in self.trials if math.isfinite(t["score"])]
        if not scored:
            raise TrainingError("no tuning trial produced a score")
        return min(scored, key=lambda t: t["score"])

    def to_dict(self) -> dict[str, Any]:
        """For the manifest: the search and its outcome."""
        best = self.best
        return {
            "model": self.model,
            "metric": self.metric,
            "method": "random search",
            "trials": self.trials,
            "best_params": best["params"],
            "best_score": best["score"],
            "default_score": self.trials[0]["score"],
        }


def sample(rng: np.random.Generator, space: dict[str, tuple[Any, ...]] = SPACE) -> dict[str, Any]:
    """One draw of parameters from the space."""
    out: dict[str, Any] = {}
    for name, spec in space.items():
        kind = spec[0]
        if kind == "choice":
            values = spec[1]
            out[name] = values[int(rng.integers(len(values)))]
        elif kind == "log":
            out[name] = float(np.exp(rng.uniform(np.log(spec[1]), np.log(spec[2]))))
        else:
            out[name] = float(rng.uniform(spec[1], spec[2]))
        if isinstance(out[name], float):
            out[name] = round(out[name], 4)
    return out


def learned_model(options: TrainOptions) -> str:
    """The learned candidate the search tunes (the first one among the options' models)."""
    for name in options.models:
        est = family(name)
        if est is not None and est.shares_tree_budget:
            return name
    raise TrainingError(
        "tune searches LightGBM parameters: name an lgbm_* model among --models "
        f"(got {', '.join(options.models)})"
    )


def tune(
    runner: HistoryRunner,
    options: TrainOptions,
    *,
    trials: int,
    max_minutes: float,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> TuneResult:
    """Random search over SPACE for the options' learned model, scored by rolling origin."""
    if trials < 1 or max_minutes <= 0:
        raise TrainingError("tune needs at least one trial and a positive time budget")
    model = learned_model(options)
    keep = {k: v for k, v in options.model_params.get(model, {}).items() if k not in SPACE}
    if options.n_estimators:
        keep.setdefault("n_estimators", options.n_estimators)
    rng = np.random.default_rng(seed)
    result = TuneResult(model=model, metric=options.metric)
    started = time.perf_counter()
    for i in range(trials):
        elapsed = time.perf_counter() - started
        # Stop when the next trial, as long as the mean one so far, would end past the budget.
        mean = elapsed / i if i else 0.0
        if i and elapsed + mean > max_minutes * 60:
            break
        params = {} if i == 0 else sample(rng)
        candidate = Forecaster(
            model=model,
            strategy=options.strategy,
            horizon=options.horizon,
            model_params={**keep, **params},
            floors=options.floors,
        )
        t0 = time.perf_counter()
        release_large_blocks()
        backtest = runner.backtest(
            [candidate],
            folds=options.folds,
            horizon=options.horizon,
            step=options.step,
            metric=options.metric,
        )
        score = backtest.score(candidate.name)
        result.trials.append(
            {
                "trial": i + 1,
                "params": params,
                "score": score,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        if progress:
            best = result.best["score"]
            shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
            progress(
                f"trial {i + 1}/{trials}: {options.metric} {score:.4f} "
                f"(best {best:.4f}) with {shown}"
            )
    return result


def tuned_options(options: TrainOptions, result: TuneResult) -> TrainOptions:
    """The options with the best trial's parameters for the tuned model."""
    params = dict(options.model_params)
    params[result.model] = {**params.get(result.model, {}), **result.best["params"]}
    return TrainOptions(**{**vars(options), "model_params": params})
