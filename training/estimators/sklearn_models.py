"""scikit-learn model families: linear, a tree, a forest and a small neural network."""

from __future__ import annotations

import warnings
from abc import abstractmethod
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, Ridge
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeRegressor
from threadpoolctl import threadpool_limits

from training.estimators.base import Estimator, FloatArray, cpu_threads, shares


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
        return shares(np.asarray(self.model_.feature_importances_), self.feature_names_)


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
        # Mini-batch matmuls are too small to gain from BLAS threads (more threads were slower).
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
