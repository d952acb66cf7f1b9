"""The estimator interface every model family implements, and the training matrix in blocks.

scikit-learn conventions: ``__init__`` only stores parameters, ``fit`` returns self, learned state
ends in "_" and use before ``fit`` raises NotFittedError. Inputs are the FeatureBuilder's float32
matrices (NaN = missing history; categorical columns hold integer codes, -1 = unknown); targets are
daily units; predictions are non-negative float64.
"""

from __future__ import annotations

import inspect
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
from sklearn.exceptions import NotFittedError

FloatArray = npt.NDArray[np.float64]
Link = Literal["identity", "log"]


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


class Estimator(ABC):
    """One model of the zoo: fit on (X, y), predict non-negative units."""

    name: str = "estimator"
    # What describes a family (class attributes: a new family sets its own):
    # _fit accepts FeatureBlocks as they are (others get the stacked matrix).
    streams_blocks: ClassVar[bool] = False
    # contributions() gives per-feature terms (explanations are offered).
    gives_contributions: ClassVar[bool] = False
    # A multi-horizon forecaster shares --trees (n_estimators) between its stages (tree_budget).
    shares_tree_budget: ClassVar[bool] = False
    # Releases the GIL while training, so a forecaster's stages train side by side.
    trains_side_by_side: ClassVar[bool] = False
    # Fast predict: below this many rows, predict runs on one thread (0: the family's default).
    small_predict_rows: ClassVar[int] = 0
    feature_names_: list[str]
    categorical_: list[str]

    @property
    def link(self) -> Link:
        """How a raw score maps to units: "log" (units = exp(raw)) or "identity"."""
        return "identity"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        """The constructor's defaults: the family's default parameters."""
        sig = inspect.signature(cls.__init__)
        return {
            n: p.default
            for n, p in sig.parameters.items()
            if n != "self" and p.default is not inspect.Parameter.empty
        }

    def budget_params(self, stages: int) -> dict[str, Any]:
        """Parameter overrides for one of ``stages`` stages sharing the tree budget ({}: none)."""
        return {}

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


def shares(values: np.ndarray, names: list[str]) -> dict[str, float]:
    total = float(np.sum(values))
    scaled = values / total if total > 0 else np.zeros_like(values, dtype=np.float64)
    return {n: float(v) for n, v in zip(names, scaled, strict=True)}
