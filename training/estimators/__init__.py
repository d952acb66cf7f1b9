"""The model zoo behind one estimator interface; the registry of model names is the only list.

A model family is one ``Estimator`` subclass whose class attributes describe it (link function,
contributions, tree budget, side-by-side training, small-input predict, default parameters), so
the forecaster, the pipeline and the explanations ask the family instead of testing its name.
Adding a family: one class (in a module of this package) and one entry in ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from training.estimators.base import (
    Estimator,
    FeatureBlocks,
    FloatArray,
    Link,
    cpu_threads,
)
from training.estimators.baselines import BASELINES, moving_average, seasonal_naive
from training.estimators.lgbm import LGBMEstimator
from training.estimators.sklearn_models import (
    ForestEstimator,
    LinearEstimator,
    MLPEstimator,
    TreeEstimator,
)

__all__ = [
    "BASELINES",
    "REGISTRY",
    "Estimator",
    "FeatureBlocks",
    "FloatArray",
    "ForestEstimator",
    "LGBMEstimator",
    "LinearEstimator",
    "Link",
    "MLPEstimator",
    "TreeEstimator",
    "cpu_threads",
    "family",
    "make_estimator",
    "model_names",
    "moving_average",
    "seasonal_naive",
]

REGISTRY: dict[str, Callable[..., Estimator]] = {
    "linear": LinearEstimator,
    "tree": TreeEstimator,
    "forest": ForestEstimator,
    "lgbm_tweedie": partial(LGBMEstimator, objective="tweedie"),
    "lgbm_poisson": partial(LGBMEstimator, objective="poisson"),
    "lgbm_l2": partial(LGBMEstimator, objective="l2"),
    "mlp": MLPEstimator,
}


def make_estimator(name: str, **params: Any) -> Estimator:
    """A fresh, unfitted estimator of the registry by name, with parameter overrides."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None
    est = factory(**params)
    if est.name != name:
        raise ValueError(f"parameters {params} turn {name!r} into {est.name!r}")
    return est


def model_names() -> tuple[str, ...]:
    """Every model a forecaster can be: the feature-free baselines, then the registry's."""
    return (*BASELINES, *REGISTRY)


def family(name: str) -> Estimator | None:
    """An unfitted estimator with the defaults of a model name (what describes its family), or
    None for a baseline."""
    return None if name in BASELINES else make_estimator(name)
