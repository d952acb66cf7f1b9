"""Training targets: stock-outs, improbable zero runs and closures censored; bulk orders capped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.training.frames import as_history, make_history, make_products
from training.cleaning import CAP_MEDIAN, ZERO_RUN_CHANCE, clean_targets, unit_caps
from training.forecaster import Forecaster

SMALL = {"n_estimators": 30, "num_leaves": 15, "min_data_in_leaf": 5}


def steady(n_skus: int = 2, n_days: int = 200, seed: int = 0) -> pd.DataFrame:
    """SKUs selling 3-7 units every day (a zero day is rare by chance)."""
    frame = make_history(n_skus, n_days, seed=seed)
    rng = np.random.default_rng(seed)
    frame["units"] = rng.integers(3, 8, len(frame)).astype(np.float32)
    return frame


def censored_days(frame: pd.DataFrame, products: pd.DataFrame, sku: str) -> list[int]:
    cleaning = clean_targets(frame, products)
    days = (frame["date"] - frame["date"].min()).dt.days.to_numpy()
    return days[cleaning.censored & (frame["sku"] == sku).to_numpy()].tolist()


def test_flagged_stock_outs_and_improbable_zero_runs_are_censored() -> None:
    frame = steady()
    products = make_products(sorted(frame["sku"].unique()), stores=("S1", "S2"))
    sku = "ITEM_0_S"
    day = (frame["date"] - frame["date"].min()).dt.days.to_numpy()
    mine = (frame["sku"] == sku).to_numpy()
    frame.loc[mine & (day >= 50) & (day < 55), "units"] = 0  # unflagged stock-out, 5 days
    frame.loc[mine & (day == 80), "units"] = 0  # one quiet day: ordinary
    frame["stock_out"] = (mine & (day == 100)).astype(np.int8)  # flagged (it still sold 1)
    frame.loc[mine & (day == 100), "units"] = 1
    frame.loc[mine & (day >= 190), "units"] = 0  # zeros to the end: no restock seen
    assert censored_days(frame, products, sku) == [50, 51, 52, 53, 54, 100]
    counts = clean_targets(frame, products).summary()
    assert counts["stock_out_days"] == 1 and counts["zero_run_days"] == 5
    assert counts["censored_days"] == 6


def test_zero_runs_of_intermittent_skus_are_ordinary() -> None:
    # Selling on a fifth of the days, 7 zeros in a row happen (chance 0.8**7 = 0.21).
    frame = steady(1)
    products = make_products(["ITEM_0_S"])
    day = (frame["date"] - frame["date"].min()).dt.days.to_numpy()
    frame.loc[day % 5 != 0, "units"] = 0
    frame.loc[(day > 100) & (day < 108), "units"] = 0
    assert ZERO_RUN_CHANCE < 0.8**7
    assert censored_days(frame, products, "ITEM_0_S") == []


def test_store_closures_and_closed_calendar_days_are_censored() -> None:
    frame = steady(4)
    products = make_products(
        sorted(frame["sku"].unique()), departments=("F_1",), stores=("S1", "S2")
    )
    store = frame["sku"].map(products.set_index("sku")["store"]).to_numpy()
    day = (frame["date"] - frame["date"].min()).dt.days.to_numpy()
    frame.loc[(store == "S1") & (day == 120), "units"] = 0  # the whole store S1 closed
    frame.loc[(frame["sku"] == "ITEM_1_S").to_numpy() & (day == 130), "units"] = 0  # one SKU
    frame["closed"] = (day == 150).astype(np.int8)  # a closure in the calendar
    sunday = (frame["date"].dt.day_of_week == 6).to_numpy()
    frame.loc[(store == "S2") & sunday, "units"] = 0  # S2 never opens on Sundays: its week
    cleaning = clean_targets(frame, products)
    got = sorted(set(day[cleaning.censored].tolist()))
    assert got == [120, 150]
    assert cleaning.summary()["closed_days"] == 2 + 4  # two S1 SKUs on day 120, all 4 on 150


def test_bulk_orders_are_capped_in_targets_and_features_never_in_the_frame() -> None:
    frame = steady(2, 200)
    products = make_products(sorted(frame["sku"].unique()))
    mine = (frame["sku"] == "ITEM_0_S").to_numpy()
    last = frame["date"].max()
    frame.loc[mine & (frame["date"] == last).to_numpy(), "units"] = 5000
    caps = unit_caps(frame["sku"].to_numpy(dtype=object), frame["units"].to_numpy(np.float64))
    assert caps["ITEM_0_S"] == CAP_MEDIAN * 5  # median sale day 5 units (3-7 every day)
    assert clean_targets(frame, products).summary()["capped_days"] == 1
    stored = frame["units"].copy()
    origin = last
    future = pd.DataFrame(
        {
            "sku": np.repeat(sorted(frame["sku"].unique()), 28),
            "date": np.tile(pd.date_range(origin + pd.Timedelta(days=1), periods=28), 2),
        }
    )
    future = future.merge(frame.drop(columns="units").drop_duplicates("sku", keep="last")
                          .drop(columns="date"), on="sku")  # fmt: skip
    future["units"] = np.nan
    extended = as_history(pd.concat([frame, future], ignore_index=True))
    means = {}
    for clean in (True, False):
        params = None if clean else {"windows": (7, 28, 91), "zero_windows": (28,),
                                     "price_windows": (28,), "cap_units": False}  # fmt: skip
        model = Forecaster(model_params=SMALL, clean=clean, builder_params=params)
        model.fit(frame, products)
        pred = model.predict(extended, products, origin)
        means[clean] = pred.loc[pred["sku"] == "ITEM_0_S", "mean"].to_numpy()
    assert (frame["units"] == stored).all()  # the frame (the store's data) is never changed
    # Usual days sell 3-7: capped, the forecast stays near them; uncapped, the spike moves it.
    assert means[True].max() < 15
    assert means[False].max() > 2 * means[True].max()


@pytest.mark.parametrize("fractional", [False, True])
def test_cleaning_a_piece_of_skus_at_a_time_is_the_cleaning_of_the_whole(
    fractional: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """clean_targets works through pieces of whole SKUs (bounded memory at M5 scale); with
    pieces of a few rows it censors and caps exactly as in one piece: stock-outs, zero runs,
    store and calendar closures, caps, whole and fractional units (the whole's store sums)."""
    from training import cleaning as C

    frame = make_history(6, 150, seed=4, offsets=[0, 0, 20, 0, 60, 0], fractional=fractional)
    rng = np.random.default_rng(4)
    products = make_products(sorted(frame["sku"].unique()), stores=("S1", "S2"))
    day = (frame["date"] - frame["date"].min()).dt.days.to_numpy()
    frame["units"] = (frame["units"] + rng.integers(3, 8, len(frame))).astype(np.float32)
    store = frame["sku"].map(products.set_index("sku")["store"]).to_numpy()
    frame.loc[(store == "S1") & (day == 90), "units"] = 0  # a store closure
    frame.loc[(frame["sku"] == "ITEM_3_S").to_numpy() & (day >= 40) & (day < 47), "units"] = 0
    frame.loc[(frame["sku"] == "ITEM_5_S").to_numpy() & (day == 70), "units"] = 900  # bulk
    frame["stock_out"] = ((day % 37) == 5).astype(np.int8)
    frame["closed"] = (day == 111).astype(np.int8)
    whole = clean_targets(frame, products)
    assert whole.counts["stock_out_days"] and whole.counts["zero_run_days"]
    assert whole.counts["closed_days"] and whole.counts["capped_days"]
    monkeypatch.setattr(C, "CLEAN_PIECE_ROWS", 7)
    pieces = clean_targets(frame, products)
    np.testing.assert_array_equal(pieces.censored, whole.censored)
    assert pieces.caps == whole.caps and pieces.counts == whole.counts
