"""Gradient-boosted trees on LightGBM's core API (lgb.train, Booster.predict on numpy)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import lightgbm as lgb
import numpy as np

from training.estimators.base import (
    Estimator,
    FeatureBlocks,
    FloatArray,
    Link,
    cpu_threads,
    shares,
)


class _BlockSequence(lgb.Sequence):
    """One FeatureBlocks block for lgb.Dataset: read whole in one batch, then let go."""

    def __init__(self, blocks: FeatureBlocks, index: int) -> None:
        self.owner = blocks
        self.n, self.build = blocks.blocks[index]
        self.batch_size = max(self.n, 1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int | slice | list[int]) -> np.ndarray:
        block = self.owner._block(self.n, self.build)
        if isinstance(idx, slice) and idx.indices(self.n) == (0, self.n, 1):
            return block
        return np.asarray(block[idx])


Objective = Literal["tweedie", "poisson", "l2"]


class LGBMEstimator(Estimator):
    """Gradient-boosted trees on the core LightGBM API (lgb.train / Booster.predict on numpy).

    contributions() are SHAP values from pred_contrib=True in the raw score space: for the
    tweedie and poisson objectives that is the log link, so exp(row sum) equals the prediction;
    for l2 the row sum is the prediction itself (before clipping at zero).
    """

    streams_blocks = True
    gives_contributions = True
    shares_tree_budget = True
    trains_side_by_side = True
    # Below this many rows, starting OpenMP's thread team costs more than it saves (and serving
    # runs requests side by side anyway).
    small_predict_rows = 1000

    def __init__(
        self,
        objective: Objective = "tweedie",
        *,
        n_estimators: int = 500,
        learning_rate: float = 0.05,
        # Chosen by the m5_tiny backtests (docs/benchmarks.md, Training: decisions): fewer,
        # smaller leaves, GOSS and a quarter of the features per tree scored as well and fit
        # faster than the alternatives tried.
        num_leaves: int = 31,
        min_data_in_leaf: int = 20,
        feature_fraction: float = 0.25,
        bagging_fraction: float = 1.0,
        bagging_freq: int = 0,
        data_sample_strategy: Literal["bagging", "goss"] = "goss",
        force_col_wise: bool = True,
        lambda_l2: float = 0.1,
        tweedie_variance_power: float = 1.1,
        max_bin: int = 100,
        early_stopping_rounds: int | None = 50,
        num_threads: int | None = None,
        train_threads: int | None = None,
        seed: int = 0,
        extra_params: dict[str, Any] | None = None,
    ) -> None:
        self.objective = objective
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.feature_fraction = feature_fraction
        self.bagging_fraction = bagging_fraction
        self.bagging_freq = bagging_freq
        self.data_sample_strategy = data_sample_strategy
        self.force_col_wise = force_col_wise
        self.lambda_l2 = lambda_l2
        self.tweedie_variance_power = tweedie_variance_power
        self.max_bin = max_bin
        self.early_stopping_rounds = early_stopping_rounds
        self.num_threads = num_threads
        # Threads for training only (None: num_threads); predictions use num_threads. The
        # multi-horizon Forecaster trains its stages side by side with one thread each.
        self.train_threads = train_threads
        self.seed = seed
        self.extra_params = extra_params

    @property
    def link(self) -> Link:
        """Tweedie and poisson model the log of the mean; l2 the mean itself."""
        return "identity" if self.objective == "l2" else "log"

    def budget_params(self, stages: int) -> dict[str, Any]:
        """Each stage gets n_estimators / stages trees at learning_rate x stages."""
        return {
            "n_estimators": max(1, round(self.n_estimators / stages)),
            "learning_rate": min(self.learning_rate * stages, 1.0),
        }

    @property
    def name(self) -> str:  # type: ignore[override]
        """The registry name, e.g. "lgbm_tweedie"."""
        return f"lgbm_{self.objective}"

    def lgb_params(self) -> dict[str, Any]:
        """The parameter dict handed to lgb.train."""
        if self.objective not in ("tweedie", "poisson", "l2"):
            raise ValueError(f"unknown LightGBM objective {self.objective!r}")
        params: dict[str, Any] = {
            "objective": "regression" if self.objective == "l2" else self.objective,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": self.bagging_freq,
            # GOSS: each tree's histograms from the 20% rows of largest gradient and a 10%
            # sample of the rest (up-weighted), after 1 / learning_rate trees on every row.
            "data_sample_strategy": self.data_sample_strategy,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "num_threads": cpu_threads(self.num_threads),
            "seed": self.seed,
            # Column-wise histograms touch only the features drawn for the tree; row-wise ones
            # walk every feature of a row (slower here: docs/benchmarks.md, Training).
            "force_col_wise": self.force_col_wise,
            "verbosity": -1,
        }
        if self.objective == "tweedie":
            params["tweedie_variance_power"] = self.tweedie_variance_power
        params.update(self.extra_params or {})
        return params

    def _fit(
        self,
        X: np.ndarray | FeatureBlocks,
        y: FloatArray,
        feature_names: list[str],
        categorical: list[str],
        sample_weight: FloatArray | None,
        eval_set: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        train = self._dataset(X, y, feature_names, categorical, sample_weight)
        self._train(train, eval_set)

    def fit_later(
        self,
        X: np.ndarray | FeatureBlocks,
        y: np.ndarray,
        *,
        feature_names: list[str],
        categorical: list[str],
    ) -> Callable[[], LGBMEstimator]:
        """Bin X into LightGBM's dataset now; the call returned trains on it (as fit would).

        X is not needed after this returns: a caller can let it go before the (long) training,
        e.g. to build the next model's features while this one trains on another thread.
        """
        data, target, _ = self._validated(X, y, feature_names, categorical, None)
        train = self._dataset(data, target, list(feature_names), list(categorical), None)
        del data, target

        def fit() -> LGBMEstimator:
            self._train(train, None)
            self.feature_names_ = list(feature_names)
            self.categorical_ = list(categorical)
            return self

        return fit

    def _dataset(
        self,
        X: np.ndarray | FeatureBlocks,
        y: FloatArray,
        feature_names: list[str],
        categorical: list[str],
        sample_weight: FloatArray | None,
    ) -> lgb.Dataset:
        """The constructed (binned) training dataset; it keeps no reference to X."""
        params = self.lgb_params()
        dataset = partial(
            lgb.Dataset,
            feature_name=feature_names,
            categorical_feature=categorical or "auto",
            params=params,
            free_raw_data=True,
        )
        if isinstance(X, FeatureBlocks):
            # Bin boundaries from the sample; then each block is binned as it is built and
            # dropped, so only LightGBM's binned copy (1 byte per value) outlives it.
            reference = dataset(X.sample).construct()
            blocks = [_BlockSequence(X, i) for i in range(len(X.blocks))]
            return dataset(blocks, label=y, weight=sample_weight, reference=reference).construct()
        return dataset(X, label=y, weight=sample_weight).construct()

    def _train(self, train: lgb.Dataset, eval_set: tuple[np.ndarray, np.ndarray] | None) -> None:
        params = self.lgb_params()
        if self.train_threads is not None:
            params["num_threads"] = self.train_threads
        valid_sets: list[lgb.Dataset] = []
        callbacks: list[Callable[..., Any]] = []
        if eval_set is not None:
            valid_sets.append(lgb.Dataset(eval_set[0], label=eval_set[1], reference=train))
            if self.early_stopping_rounds:
                callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            params,
            train,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets or None,
            valid_names=["valid"] if valid_sets else None,
            callbacks=callbacks or None,
        )
        best = booster.best_iteration
        self.best_iteration_ = int(best) if best and best > 0 else booster.current_iteration()
        # A booster read back from its model text holds the trees only: the training booster
        # also keeps its dataset, scores, gradients and histograms, which would otherwise stay
        # alive beside the next stage's.
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=-1))
        del booster, train

    def adopt(
        self, fitted: lgb.LGBMModel, *, feature_names: list[str], categorical: list[str]
    ) -> LGBMEstimator:
        """Take the trees of a LightGBM model fitted elsewhere with this estimator's parameters
        (``lightgbm.dask`` across a cluster's workers: training.engine.dask_runner), as a fit
        here would have left them: the model text only, every round kept."""
        booster = fitted.booster_
        self.best_iteration_ = booster.current_iteration()
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=-1))
        self.feature_names_ = list(feature_names)
        self.categorical_ = list(categorical)
        return self

    def _predict(self, X: np.ndarray) -> np.ndarray:
        small = len(X) < self.small_predict_rows
        threads = 1 if small else cpu_threads(self.num_threads)
        out = self.booster_.predict(X, num_iteration=self.best_iteration_, num_threads=threads)
        return np.asarray(out, dtype=np.float64)

    def raw_predict(self, X: np.ndarray) -> FloatArray:
        """Raw scores (log of the mean for tweedie/poisson) before the link and clipping."""
        self._check_fitted()
        X = self._check_X(X, len(self.feature_names_))
        raw = self.booster_.predict(
            X,
            num_iteration=self.best_iteration_,
            raw_score=True,
            num_threads=cpu_threads(self.num_threads),
        )
        return np.asarray(raw, dtype=np.float64)

    def tree_leaves(self) -> list[int]:
        """The number of leaves of each tree used in predictions."""
        self._check_fitted()
        dump = self.booster_.dump_model(num_iteration=self.best_iteration_)
        return [int(t["num_leaves"]) for t in dump["tree_info"]]

    def feature_importance(self) -> dict[str, float]:
        """Total split gain per feature, as a share of the total."""
        self._check_fitted()
        gain = self.booster_.feature_importance(
            importance_type="gain", iteration=self.best_iteration_
        )
        return shares(np.asarray(gain, dtype=np.float64), self.feature_names_)

    def contributions(self, X: np.ndarray) -> FloatArray:
        """SHAP values (n, k+1) in raw score space; the last column is the expected value."""
        self._check_fitted()
        X = self._check_X(X, len(self.feature_names_))
        contrib = self.booster_.predict(
            X,
            num_iteration=self.best_iteration_,
            pred_contrib=True,
            num_threads=cpu_threads(self.num_threads),
        )
        return np.asarray(contrib, dtype=np.float64)
