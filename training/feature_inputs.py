"""What the feature builders read from the frames: the history's columns as arrays grouped by
SKU and the SKUs' product attributes, read once and shared by every builder of a model."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from featurestore.schema import HISTORY_COLUMNS, HISTORY_FLAGS, HISTORY_VALUES
from training.cleaning import day_numbers, sku_codes
from training.feature_grid import (
    CALENDAR_COLUMNS,
    CATEGORICAL,
    PROMO_COLUMNS,
    HistoryArrays,
    IntArray,
)

PRODUCT_REQUIRED = ("sku", "item_id", "department", "category", "store", "launch_date")


@dataclass
class Prepared:
    """A history frame's columns as arrays and its SKUs' attributes: what every builder reads
    from the frames before computing, shared by the builders of a multi-stage model."""

    n: int
    sku: np.ndarray
    units: np.ndarray
    dates: np.ndarray
    data: HistoryArrays
    covariates: dict[str, np.ndarray]
    attrs: dict[str, np.ndarray]
    flags: dict[str, np.ndarray]  # HISTORY_FLAGS as bool arrays (all False when not given)


def prepare(history: pd.DataFrame, products: pd.DataFrame) -> Prepared:
    """Read the frames once for any number of ``FeatureBuilder.transform`` calls on them."""
    check_columns(history, tuple(HISTORY_COLUMNS), "history")
    return prepare_arrays(
        sku=history["sku"].to_numpy(dtype=object),
        dates=history["date"].to_numpy(),
        days=_day_numbers(history["date"]),
        columns={c: _numeric(history[c]) for c in _ARRAY_COLUMNS + _FLAG_COLUMNS if c in history},
        products=products,
    )


# The numeric history columns the builders read: every value column of the contract.
_ARRAY_COLUMNS = tuple(HISTORY_VALUES)
# The readers' flags: absent from a hand-built frame, they are 0 there (HISTORY_FLAGS).
_FLAG_COLUMNS = tuple(HISTORY_FLAGS)


def prepare_arrays(
    *,
    sku: np.ndarray,
    dates: np.ndarray,
    days: IntArray,
    columns: dict[str, np.ndarray],
    products: pd.DataFrame,
) -> Prepared:
    """``prepare`` from a history frame's columns as numpy arrays (no frame to build or read).

    ``sku`` (object), ``dates`` (the date column as datetime64), ``days`` (the same as integer
    days since 1970-01-01) and ``columns`` (units, price, promotion and calendar columns with
    the frame's dtypes, NaN for unknown units; the HISTORY_FLAGS when known) give exactly what
    ``prepare`` of the frame gives.
    """
    check_products(products)
    n = len(sku)
    missing = [c for c in _ARRAY_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"history columns lack {missing}")
    units_all = columns["units"]
    codes, uniques = _factorize(sku)
    # Rows grouped by SKU (readers give them so; otherwise sort once) so a chunk is a slice.
    grouped = bool((codes[1:] >= codes[:-1]).all())
    by_sku = np.arange(n) if grouped else np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[by_sku], np.arange(len(uniques) + 1))
    flags = {
        c: (columns[c] > 0) if c in columns else np.zeros(n, dtype=bool) for c in _FLAG_COLUMNS
    }
    data = HistoryArrays(
        codes=codes,
        days=np.asarray(days, dtype=np.int64),
        units=units_all,
        price=columns["price"],
        promo=columns["on_promotion"] > 0,
        price_paid=flags["price_paid"],
        by_sku=by_sku,
        bounds=bounds,
    )
    return Prepared(
        n=n,
        sku=sku,
        units=units_all,
        dates=dates,
        data=data,
        covariates={c: columns[c] for c in (*PROMO_COLUMNS, *CALENDAR_COLUMNS)},
        attrs=sku_attributes(products, uniques),
        flags=flags,
    )


def check_columns(frame: pd.DataFrame, required: Sequence[str], label: str) -> None:
    """Refuse a frame that lacks columns of the contract (extra columns and order do not matter)."""
    present = set(frame.columns)
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"{label} frame lacks columns {missing}")


def check_products(products: pd.DataFrame) -> None:
    check_columns(products, PRODUCT_REQUIRED, "products")


def sku_attributes(products: pd.DataFrame, skus: np.ndarray) -> dict[str, np.ndarray]:
    """Product attributes for ``skus`` in that order (None / NaT for SKUs without a product)."""
    known = products["sku"].to_numpy(dtype=object)
    where = {s: i for i, s in enumerate(known)}
    if len(where) != len(known):
        raise ValueError("products frame has duplicate skus")
    pos = np.array([where.get(s, -1) for s in skus], dtype=np.int64)
    hit = pos >= 0
    attrs: dict[str, np.ndarray] = {"sku": np.asarray(skus, dtype=object)}
    for key in ("item_id", *CATEGORICAL):
        values = np.full(len(skus), None, dtype=object)
        values[hit] = products[key].to_numpy(dtype=object)[pos[hit]]
        attrs[key] = values
    attrs["store_category"] = np.array(
        [
            f"{s}|{c}" if present(s) and present(c) else None
            for s, c in zip(attrs["store"], attrs["category"], strict=True)
        ],
        dtype=object,
    )
    launch = np.full(len(skus), np.datetime64("NaT"), dtype="datetime64[D]")
    launch[hit] = _dates(products["launch_date"])[pos[hit]]
    attrs["launch_date"] = launch
    return attrs


def present(value: object) -> bool:
    return (
        value is not None
        and not (isinstance(value, float) and math.isnan(value))
        and value is not pd.NA
    )


def _dates(column: pd.Series) -> np.ndarray:
    """A date column as datetime64[D] (NaT kept)."""
    values = column.to_numpy()
    if values.dtype.kind != "M":
        values = pd.to_datetime(column).to_numpy()
    return values.astype("datetime64[D]")


def _day_numbers(dates: pd.Series) -> IntArray:
    """Absolute day numbers (days since 1970-01-01) of a datetime column."""
    values = dates.to_numpy()
    if values.dtype.kind != "M":
        values = pd.to_datetime(dates).to_numpy()
    if np.isnat(values).any():
        raise ValueError("history has rows without a date")
    return day_numbers(values)


def _numeric(column: pd.Series) -> np.ndarray:
    """A numeric column as a numpy array: its own dtype (no copy), float64 with NaN if nullable."""
    if isinstance(column.dtype, np.dtype) and column.dtype.kind in "fiub":
        return column.to_numpy()
    return column.to_numpy(dtype=np.float64, na_value=np.nan)


def _factorize(sku: np.ndarray) -> tuple[IntArray, np.ndarray]:
    """Integer codes and unique values of the SKU column (fast when grouped, as readers give it)."""
    codes, uniques = sku_codes(sku)
    if any(not present(s) for s in uniques):
        raise ValueError("history has rows without a sku")
    return codes, uniques
