"""The model zoo behind one estimator interface, with scikit-learn conventions.

`__init__` only stores parameters, `fit` returns self, learned state ends in "_" and use before
`fit` raises NotFittedError. Inputs are the FeatureBuilder's float32 matrices (NaN = missing
history; categorical columns hold integer codes, -1 = unknown); targets are daily units.
Predictions are non-negative float64. The seasonal-naive and moving-average baselines need no
features: they forecast straight from the history matrix.
"""

from __future__ import annotations

import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Self

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeRegressor
from threadpoolctl import threadpool_limits

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "BASELINES",
    "REGISTRY",
    "Estimator",
    "FeatureBlocks",
    "ForestEstimator",
    "LGBMEstimator",
    "LinearEstimator",
    "MLPEstimator",
    "TreeEstimator",
    "cpu_threads",
    "make_estimator",
    "moving_average",
    "seasonal_naive",
]


def cpu_threads(n: int | None) -> int:
    """``n``, or the CPUs this process may run on (not the host's count, in a container)."""
    if n is not None:
        return n
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass(frozen=True)
class FeatureBlocks:
    """A training matrix as row blocks built on demand, so it never exists whole in memory.

    ``blocks`` are (row count, build) pairs in row order; ``build()`` returns that block's float32
    (rows x n_features) matrix. ``sample`` holds rows drawn like the whole (LightGBM takes its bin
    boundaries from it). Estimators that cannot stream (scikit-learn) stack the blocks.
    """

    n_features: int
    blocks: list[tuple[int, Callable[[], np.ndarray]]]
    sample: np.ndarray

    @property
    def n_rows(self) -> int:
        """Rows of all blocks together."""
        return sum(n for n, _ in self.blocks)

    def materialise(self) -> np.ndarray:
        """The whole matrix (for estimators that need it in memory)."""
        return np.concatenate([self._block(n, build) for n, build in self.blocks], axis=0)

    def _block(self, n: int, build: Callable[[], np.ndarray]) -> np.ndarray:
        block = np.asarray(build())
        if block.shape != (n, self.n_features):
            raise ValueError(f"a block has shape {block.shape}, expected {(n, self.n_features)}")
        return block


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


class Estimator(ABC):
    """One model of the zoo: fit on (X, y), predict non-negative units."""

    name: str = "estimator"
    # Whether _fit accepts FeatureBlocks as they are (others get the stacked matrix).
    streams_blocks: bool = False
    feature_names_: list[str]
    categorical_: list[str]

    def fit(
        self,
        X: np.ndarray | FeatureBlocks,
        y: np.ndarray,
        *,
        feature_names: list[str],
        categorical: list[str],
        sample_weight: np.ndarray | None = None,
        eval_set: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> Self:
        """Fit on X (n, k) and y (n,); eval_set is used for early stopping where supported.

        X may be FeatureBlocks: LightGBM then bins each block as it is built.
        """
        data, target, weight = self._validated(X, y, feature_names, categorical, sample_weight)
        if eval_set is not None:
            eval_set = (self._check_X(eval_set[0], len(feature_names)), np.asarray(eval_set[1]))
        self._fit(data, target, list(feature_names), list(categorical), weight, eval_set)  # type: ignore[arg-type]
        self.feature_names_ = list(feature_names)
        self.categorical_ = list(categorical)
        return self

    def _validated(
        self,
        X: np.ndarray | FeatureBlocks,
        y: np.ndarray,
        feature_names: list[str],
        categorical: list[str],
        sample_weight: np.ndarray | None,
    ) -> tuple[np.ndarray | FeatureBlocks, FloatArray, FloatArray | None]:
        """X (stacked unless the estimator streams blocks), y as float64 and the weights."""
        data: np.ndarray | FeatureBlocks
        if isinstance(X, FeatureBlocks):
            if X.n_features != len(feature_names):
                raise ValueError(f"X has {X.n_features} columns, expected {len(feature_names)}")
            data = X if self.streams_blocks else X.materialise()
        else:
            data = self._check_X(X, len(feature_names))
        n_rows = data.n_rows if isinstance(data, FeatureBlocks) else data.shape[0]
        target = np.asarray(y, dtype=np.float64).ravel()
        if target.shape[0] != n_rows:
            raise ValueError(f"X has {n_rows} rows but y has {target.shape[0]}")
        if not np.isfinite(target).all() or (target < 0).any():
            raise ValueError("y must be finite and non-negative")
        unknown = set(categorical) - set(feature_names)
        if unknown:
            raise ValueError(f"categorical features not among feature_names: {sorted(unknown)}")
        weight = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        return data, target, weight

    def predict(self, X: np.ndarray) -> FloatArray:
        """Predicted units, float64 and clipped at zero."""
        self._check_fitted()
        pred = self._predict(self._check_X(X, len(self.feature_names_)))
        return np.clip(np.asarray(pred, dtype=np.float64).ravel(), 0.0, None)

    def feature_importance(self) -> dict[str, float] | None:
        """Importance per feature name (share of the total), or None if the model has none."""
        self._check_fitted()
        return None

    def contributions(self, X: np.ndarray) -> FloatArray | None:
        """Per-feature contributions (n, k+1), last column the bias; None if unsupported."""
        self._check_fitted()
        return None

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (what make_estimator accepts), for manifests."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and k[0] != "_"}

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_"):
            raise NotFittedError(f"{type(self).__name__} ({self.name}) is not fitted yet")

    @staticmethod
    def _check_X(X: np.ndarray, k: int) -> np.ndarray:
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.shape[1] != k:
            raise ValueError(f"X must be 2-D with {k} columns, got shape {arr.shape}")
        return arr

    @abstractmethod
    def _fit(
        self,
        X: np.ndarray,
        y: FloatArray,
        feature_names: list[str],
        categorical: list[str],
        sample_weight: FloatArray | None,
        eval_set: tuple[np.ndarray, np.ndarray] | None,
    ) -> None: ...

    @abstractmethod
    def _predict(self, X: np.ndarray) -> np.ndarray: ...

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def _shares(values: np.ndarray, names: list[str]) -> dict[str, float]:
    total = float(np.sum(values))
    scaled = values / total if total > 0 else np.zeros_like(values, dtype=np.float64)
    return {n: float(v) for n, v in zip(names, scaled, strict=True)}


# --- LightGBM -----------------------------------------------------------------------------------

Objective = Literal["tweedie", "poisson", "l2"]


class LGBMEstimator(Estimator):
    """Gradient-boosted trees on the core LightGBM API (lgb.train / Booster.predict on numpy).

    contributions() are SHAP values from pred_contrib=True in the raw score space: for the
    tweedie and poisson objectives that is the log link, so exp(row sum) equals the prediction;
    for l2 the row sum is the prediction itself (before clipping at zero).
    """

    streams_blocks = True

    def __init__(
        self,
        objective: Objective = "tweedie",
        *,
        n_estimators: int = 500,
        learning_rate: float = 0.05,
        # Measured on m5_tiny (bench/train.py): 31 leaves / 20 per leaf beat 127 / 100 on RMSSE
        # and WAPE for every strategy (multi: 0.734 vs 0.739 RMSSE) and fit 2-3x faster. A
        # quarter of the features per tree, GOSS row sampling and column-wise histograms cut the
        # histogram work (rows x features per tree, most of the fit) and scored as well as half
        # the features, all rows and LightGBM's own choice; 100 bins scored as well as 255; row
        # bagging (0.5 or 0.8) saved no time (out-of-bag rows still need their scores) and scored
        # worse than none (docs/benchmarks.md).
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
            # Column-wise histograms touch only the features drawn for the tree (a quarter);
            # row-wise ones walk every feature of a row (8-45% slower on m5_tiny, as measured).
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
        # also keeps its dataset, scores, gradients and histograms (about 1 GB at 9M rows), which
        # would otherwise stay alive beside the next stage's.
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=-1))
        del booster, train

    def _predict(self, X: np.ndarray) -> np.ndarray:
        out = self.booster_.predict(
            X, num_iteration=self.best_iteration_, num_threads=cpu_threads(self.num_threads)
        )
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

    def feature_importance(self) -> dict[str, float]:
        """Total split gain per feature, as a share of the total."""
        self._check_fitted()
        gain = self.booster_.feature_importance(
            importance_type="gain", iteration=self.best_iteration_
        )
        return _shares(np.asarray(gain, dtype=np.float64), self.feature_names_)

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


# --- scikit-learn models ------------------------------------------------------------------------


def _split_columns(feature_names: list[str], categorical: list[str]) -> tuple[list[int], list[int]]:
    cats = set(categorical)
    num_idx = [i for i, n in enumerate(feature_names) if n not in cats]
    cat_idx = [i for i, n in enumerate(feature_names) if n in cats]
    return num_idx, cat_idx


def _encoded_preprocessor(
    feature_names: list[str], categorical: list[str], max_categories: int
) -> ColumnTransformer:
    """Median-impute + standardise numeric columns, one-hot the categorical codes."""
    num_idx, cat_idx = _split_columns(feature_names, categorical)
    parts: list[tuple[str, Any, list[int]]] = []
    if num_idx:
        numeric = make_pipeline(
            # keep_empty_features: an all-NaN column (e.g. a long lag on short data) stays put.
            SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
            StandardScaler(),
        )
        parts.append(("num", numeric, num_idx))
    if cat_idx:
        onehot = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=-1.0, keep_empty_features=True),
            # Capped so that high-cardinality codes (item, SKU) do not explode the design.
            OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                max_categories=max_categories,
                sparse_output=False,
                dtype=np.float32,
            ),
        )
        parts.append(("cat", onehot, cat_idx))
    return ColumnTransformer(parts, remainder="drop", sparse_threshold=0.0)


class _SklearnEstimator(Estimator):
    """Shared fit/predict for models that are a scikit-learn pipeline in `model_`."""

    model_: Any

    def _fit(
        self,
        X: np.ndarray,
        y: FloatArray,
        feature_names: list[str],
        categorical: list[str],
        sample_weight: FloatArray | None,
        eval_set: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        model = self._build(feature_names, categorical, X.shape[0])
        fit_params = {} if sample_weight is None else {self._weight_param(model): sample_weight}
        model.fit(X, self._transform_y(y), **fit_params)
        self.model_ = model
        self._after_fit(X, y, sample_weight)

    def _predict(self, X: np.ndarray) -> np.ndarray:
        raw = self.model_.predict(X)
        return self._inverse_y(np.asarray(raw, dtype=np.float64))

    @staticmethod
    def _weight_param(model: Any) -> str:
        if isinstance(model, Pipeline):
            return f"{model.steps[-1][0]}__sample_weight"
        return "sample_weight"

    @abstractmethod
    def _build(self, feature_names: list[str], categorical: list[str], n_rows: int) -> Any: ...

    def _transform_y(self, y: FloatArray) -> FloatArray:
        return y

    def _inverse_y(self, t: FloatArray) -> FloatArray:
        return t

    def _after_fit(self, X: np.ndarray, y: FloatArray, weight: FloatArray | None) -> None:
        return None


class LinearEstimator(_SklearnEstimator):
    """Ridge (l1_ratio=0) or ElasticNet on standardised imputed features + one-hot categoricals."""

    name = "linear"

    def __init__(
        self, *, alpha: float = 1.0, l1_ratio: float = 0.0, max_categories: int = 64, seed: int = 0
    ) -> None:
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_categories = max_categories
        self.seed = seed

    def _build(self, feature_names: list[str], categorical: list[str], n_rows: int) -> Any:
        reg: Ridge | ElasticNet
        if self.l1_ratio > 0:
            reg = ElasticNet(alpha=self.alpha, l1_ratio=self.l1_ratio, random_state=self.seed)
        else:
            # lsqr: the normal equations of n rows are ill-conditioned (n / alpha) for cholesky.
            reg = Ridge(alpha=self.alpha, solver="lsqr")
        pre = _encoded_preprocessor(feature_names, categorical, self.max_categories)
        return Pipeline([("pre", pre), ("reg", reg)])


class TreeEstimator(_SklearnEstimator):
    """A single regression tree; categorical codes are used as ordinal, NaN handled natively."""

    name = "tree"

    def __init__(
        self, *, max_depth: int | None = 12, min_samples_leaf: int = 50, seed: int = 0
    ) -> None:
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.seed = seed

    def _build(self, feature_names: list[str], categorical: list[str], n_rows: int) -> Any:
        return DecisionTreeRegressor(
            max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf, random_state=self.seed
        )

    def feature_importance(self) -> dict[str, float]:
        """Impurity-based importance per feature (sums to 1)."""
        self._check_fitted()
        return _shares(np.asarray(self.model_.feature_importances_), self.feature_names_)


class ForestEstimator(TreeEstimator):
    """A bounded random forest: each tree sees at most `max_samples` rows and a feature subset."""

    name = "forest"

    def __init__(
        self,
        *,
        n_estimators: int = 100,
        max_samples: int = 20_000,
        max_features: float = 0.5,
        max_depth: int | None = None,
        min_samples_leaf: int = 20,
        n_jobs: int | None = None,
        seed: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.seed = seed

    def _build(self, feature_names: list[str], categorical: list[str], n_rows: int) -> Any:
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(
            n_estimators=self.n_estimators,
            max_samples=min(self.max_samples, n_rows),
            max_features=self.max_features,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=cpu_threads(self.n_jobs),
            random_state=self.seed,
        )


class MLPEstimator(_SklearnEstimator):
    """A small MLP on one-hot/standardised features, trained on the standardised log1p target.

    Training uses at most `max_samples` rows (a seeded random subset) and `max_iter` epochs with
    early stopping on an internal 10% validation split; eval_set is not used.

    The log target shrinks the mean (Jensen), so predictions are rescaled by one factor that
    makes the training total match: that keeps aggregate bias near zero.
    """

    name = "mlp"

    def __init__(
        self,
        *,
        hidden_layer_sizes: tuple[int, ...] = (64, 32),
        alpha: float = 1e-4,
        learning_rate_init: float = 1e-3,
        batch_size: int = 512,
        max_iter: int = 30,
        n_iter_no_change: int = 4,
        max_samples: int | None = 200_000,
        max_categories: int = 64,
        seed: int = 0,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.n_iter_no_change = n_iter_no_change
        self.max_samples = max_samples
        self.max_categories = max_categories
        self.seed = seed

    def _build(self, feature_names: list[str], categorical: list[str], n_rows: int) -> Any:
        mlp = MLPRegressor(
            hidden_layer_sizes=self.hidden_layer_sizes,
            alpha=self.alpha,
            learning_rate_init=self.learning_rate_init,
            batch_size=min(self.batch_size, n_rows),
            max_iter=self.max_iter,
            early_stopping=True,
            n_iter_no_change=self.n_iter_no_change,
            random_state=self.seed,
        )
        pre = _encoded_preprocessor(feature_names, categorical, self.max_categories)
        return Pipeline([("pre", pre), ("mlp", mlp)])

    def _fit(
        self,
        X: np.ndarray,
        y: FloatArray,
        feature_names: list[str],
        categorical: list[str],
        sample_weight: FloatArray | None,
        eval_set: tuple[np.ndarray, np.ndarray] | None,
    ) -> None:
        if self.max_samples is not None and X.shape[0] > self.max_samples:
            # Each epoch costs O(rows): a fixed random subset bounds the training time.
            rng = np.random.default_rng(self.seed)
            keep = np.sort(rng.choice(X.shape[0], self.max_samples, replace=False))
            X, y = X[keep], y[keep]
            sample_weight = None if sample_weight is None else sample_weight[keep]
        log_y = np.log1p(y)
        self.y_mean_ = float(log_y.mean())
        self.y_std_ = float(log_y.std()) or 1.0
        self.scale_ = 1.0
        # Mini-batch matmuls are too small to gain from BLAS threads; on a busy 2-core machine
        # two OpenBLAS threads made an epoch 4-16x slower than one (measured).
        # Hitting max_iter is a budget we chose, not an error: record it instead of warning.
        with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            super()._fit(X, y, feature_names, categorical, sample_weight, eval_set)
        mlp = self.model_.named_steps["mlp"]
        self.n_iter_ = int(mlp.n_iter_)
        self.converged_ = self.n_iter_ < self.max_iter

    def _transform_y(self, y: FloatArray) -> FloatArray:
        return (np.log1p(y) - self.y_mean_) / self.y_std_

    def _inverse_y(self, t: FloatArray) -> FloatArray:
        return self.scale_ * np.expm1(np.clip(t * self.y_std_ + self.y_mean_, 0.0, 30.0))

    def _after_fit(self, X: np.ndarray, y: FloatArray, weight: FloatArray | None) -> None:
        w = np.ones_like(y) if weight is None else weight
        fitted = float(np.sum(w * self._predict(X)))
        self.scale_ = float(np.sum(w * y)) / fitted if fitted > 0 else 1.0


# --- registry -----------------------------------------------------------------------------------

REGISTRY: dict[str, Callable[..., Estimator]] = {
    "lgbm_tweedie": partial(LGBMEstimator, objective="tweedie"),
    "lgbm_poisson": partial(LGBMEstimator, objective="poisson"),
    "lgbm_l2": partial(LGBMEstimator, objective="l2"),
    "linear": LinearEstimator,
    "tree": TreeEstimator,
    "forest": ForestEstimator,
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


# --- baselines ----------------------------------------------------------------------------------


def _history(history_units: np.ndarray) -> FloatArray:
    h = np.asarray(history_units, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"history must be 2-D (n_series, n_days), got shape {h.shape}")
    return h


def _row_mean(h: FloatArray) -> FloatArray:
    seen = ~np.isnan(h)
    count = seen.sum(axis=1)
    total = np.where(seen, h, 0.0).sum(axis=1)
    return np.divide(total, count, out=np.zeros(h.shape[0]), where=count > 0)


def seasonal_naive(history_units: np.ndarray, horizon: int, season: int = 7) -> FloatArray:
    """Repeat the last observed season: day T+h gets the units of day T+h-k*season (latest one).

    history_units is (n_series, n_days) with the cut-off as the last column; NaN marks days not
    observed (series that started late). A weekday never observed takes the series' mean, and
    a series with no observed day forecasts 0.
    """
    h = _history(history_units)
    if horizon < 1 or season < 1:
        raise ValueError("horizon and season must be positive")
    n_series, n_days = h.shape
    n_weeks = -(-n_days // season)
    padded = np.full((n_series, n_weeks * season), np.nan)
    padded[:, n_weeks * season - n_days :] = h
    weeks = padded.reshape(n_series, n_weeks, season)
    # The latest non-NaN value per season position: index of the last observed week.
    seen = ~np.isnan(weeks)
    last = n_weeks - 1 - np.argmax(seen[:, ::-1, :], axis=1)
    profile = np.take_along_axis(weeks, last[:, None, :], axis=1)[:, 0, :]
    profile = np.where(seen.any(axis=1), profile, _row_mean(h)[:, None])
    return profile[:, np.arange(horizon) % season].astype(np.float64)


def moving_average(history_units: np.ndarray, horizon: int, window: int = 28) -> FloatArray:
    """Flat forecast: the mean of the observed days among the last `window` (0 if none)."""
    h = _history(history_units)
    if horizon < 1 or window < 1:
        raise ValueError("horizon and window must be positive")
    mean = _row_mean(h[:, -window:])
    return np.repeat(mean[:, None], horizon, axis=1)


BASELINES: dict[str, Callable[[np.ndarray, int], FloatArray]] = {
    "seasonal_naive": seasonal_naive,
    "moving_average": moving_average,
}
