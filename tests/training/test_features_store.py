"""Leakage through the store: order lines after a target's origin never reach its features."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from featurestore.ingest import ingest_file
from featurestore.readers import read_frame, read_products
from tests.featurestore.ingest_helpers import load_products
from training.features import FeatureBuilder

D0 = date(2024, 1, 1)
DAYS = 70
MIN_LAG = 7
TARGET = D0 + timedelta(days=60)
ORIGIN = TARGET - timedelta(days=MIN_LAG)
PARAMS = {"windows": (3, 7, 28), "zero_windows": (7,), "price_windows": (7,), "max_lookback": 28}


def _orders(path: Path, lines: list[tuple[str, str, date, int, float]]) -> Path:
    frame = pd.DataFrame(lines, columns=["order_id", "sku", "day", "quantity", "unit_price"])
    frame["ordered_at"] = [f"{d.isoformat()}T12:00:00Z" for d in frame["day"]]
    frame["status"] = "completed"
    frame.drop(columns="day").to_csv(path, index=False)
    return path


def _history(engine: Engine) -> tuple[pd.DataFrame, pd.DataFrame]:
    end = D0 + timedelta(days=DAYS - 1)
    history = read_frame(engine, end=end, as_of=end)
    assert history["price_paid"].all()  # no price list: every price is a paid one
    return history, read_products(engine)


def _features(builder: FeatureBuilder, engine: Engine) -> np.ndarray:
    """The target day's features (the builder fitted once: its encodings are the fit's)."""
    history, products = _history(engine)
    rows = (history["date"] == pd.Timestamp(TARGET)).to_numpy()
    return builder.transform(history, products, rows=rows).X


def _base_lines() -> list[tuple[str, str, date, int, float]]:
    rng = np.random.default_rng(4)
    lines = []
    for k in range(DAYS):
        day = D0 + timedelta(days=k)
        for sku in ("A", "B"):
            if rng.random() < 0.5:
                lines.append((f"O{k}{sku}", sku, day, int(rng.integers(1, 4)), 9.0 + k % 3))
    return lines


def test_order_lines_after_the_origin_leave_every_feature_unchanged(
    engine: Engine, tmp_path: Path
) -> None:
    load_products(engine, tmp_path)
    assert ingest_file(engine, "orders", _orders(tmp_path / "o1.csv", _base_lines())).status == (
        "loaded"
    )
    builder = FeatureBuilder(min_lag=MIN_LAG, **PARAMS).fit(*_history(engine))
    names = list(builder.features_order_)
    before = _features(builder, engine)
    # A sale at a new price on every day after the origin, the target day included.
    late = [
        (f"LATE{k}{sku}", sku, ORIGIN + timedelta(days=k), 5, 3.0 + k)
        for k in range(1, MIN_LAG + 1)
        for sku in ("A", "B")
    ]
    assert ingest_file(engine, "orders", _orders(tmp_path / "o2.csv", late)).status == "loaded"
    after = _features(builder, engine)
    same = (before == after) | (np.isnan(before) & np.isnan(after))
    assert same.all(), [n for n, ok in zip(names, same.all(axis=0), strict=True) if not ok]
    # Not vacuous: a sale on the origin day itself does reach them.
    origin = [("ORIGIN", "A", ORIGIN, 50, 1.0)]
    assert ingest_file(engine, "orders", _orders(tmp_path / "o3.csv", origin)).status == "loaded"
    moved = _features(builder, engine)
    lag = names.index(f"lag_{MIN_LAG}")
    assert not np.array_equal(after[:, lag], moved[:, lag])
