"""FeatureBuilder: values against naive references, parity, leakage, frozen names, encodings."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import NotFittedError

from tests.training.frames import as_history, make_history, make_products, serving_frame
from training import features as features_module
from training.features import FeatureBuilder, FeatureMatrix, default_lags

SMALL: dict[str, Any] = {
    "windows": (3, 7),
    "zero_windows": (7,),
    "price_windows": (7,),
    "ewm_alphas": (0.3,),
    "max_lookback": 10,
}


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    """Four SKUs over 500 days, two of them young, with non-integer units."""
    return make_history(4, 500, seed=1, offsets=[0, 0, 150, 430], fractional=True)


@pytest.fixture(scope="module")
def products(history: pd.DataFrame) -> pd.DataFrame:
    skus = sorted(history["sku"].unique())
    launch = [pd.Timestamp("2023-06-01"), None, None, None]
    return make_products(skus, launch=launch)


def column(fm: FeatureMatrix, name: str) -> np.ndarray:
    return fm.X[:, fm.feature_names.index(name)].astype(np.float64)


def lookup(full: FeatureMatrix, part: FeatureMatrix) -> np.ndarray:
    """Rows of ``full`` with the (sku, date) keys of ``part``, in ``part``'s order."""
    keys = pd.MultiIndex.from_arrays([full.sku, full.date])
    idx = keys.get_indexer(pd.MultiIndex.from_arrays([part.sku, part.date]))
    assert (idx >= 0).all()
    return full.X[idx]


def assert_same_features(a: np.ndarray, b: np.ndarray, names: list[str]) -> None:
    """Bit-identical (NaN equal to NaN), naming the features that differ."""
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    differing = [names[i] for i in np.flatnonzero(~same.all(axis=0))]
    assert not differing, f"features differ: {differing}"


# -- contract -----------------------------------------------------------------------------------


def test_transform_before_fit_raises(history: pd.DataFrame, products: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError):
        FeatureBuilder().transform(history, products)


def test_init_only_stores_parameters() -> None:
    builder = FeatureBuilder(min_lag=0, windows=())
    assert builder.min_lag == 0 and builder.windows == ()
    with pytest.raises(ValueError, match="min_lag"):
        builder.fit(make_history(1, 30), make_products(["ITEM_0_S"]))


@pytest.mark.parametrize(
    "params",
    [{"lags": (1, 2)}, {"windows": ()}, {"ewm_alphas": (1.0,)}, {"promo_lookahead": -1}],
)
def test_invalid_parameters_raise(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FeatureBuilder(min_lag=3, **params).fit(make_history(1, 30), make_products(["ITEM_0_S"]))


@pytest.mark.parametrize("min_lag", [1, 7, 14, 28])
def test_default_lags_respect_the_lag_floor(min_lag: int) -> None:
    lags = default_lags(min_lag)
    assert min(lags) == min_lag
    assert 364 in lags
    assert set(range(min_lag, min_lag + 7)) <= set(lags)
    assert sum(1 for k in lags if k % 7 == 0 and k >= min_lag) >= 4


def test_missing_columns_are_refused(history: pd.DataFrame, products: pd.DataFrame) -> None:
    builder = FeatureBuilder(**SMALL).fit(history, products)
    with pytest.raises(ValueError, match="promo_depth"):
        builder.transform(history.drop(columns="promo_depth"), products)
    with pytest.raises(ValueError, match="store"):
        builder.transform(history, products.drop(columns="store"))
    with pytest.raises(ValueError, match="units"):
        FeatureBuilder().fit(history.drop(columns="units"), products)


def test_column_order_and_extra_columns_do_not_matter(
    history: pd.DataFrame, products: pd.DataFrame
) -> None:
    builder = FeatureBuilder(**SMALL).fit(history, products)
    base = builder.transform(history, products)
    shuffled = history[list(reversed(history.columns))].assign(extra=1.0)
    other = builder.transform(shuffled, products[list(reversed(products.columns))])
    assert_same_features(base.X, other.X, base.feature_names)


def test_duplicate_rows_are_refused(history: pd.DataFrame, products: pd.DataFrame) -> None:
    builder = FeatureBuilder(**SMALL).fit(history, products)
    doubled = pd.concat([history, history.iloc[[5]]], ignore_index=True)
    with pytest.raises(ValueError, match="duplicate"):
        builder.transform(doubled, products)


def test_feature_names_frozen_at_fit(history: pd.DataFrame, products: pd.DataFrame) -> None:
    builder = FeatureBuilder(min_lag=7).fit(history, products)
    frozen = list(builder.features_order_)
    expected = builder.transform(history, products)
    assert expected.feature_names == frozen == builder.feature_names_
    assert expected.X.shape == (len(history), len(frozen))
    assert expected.X.dtype == np.float32
    assert len(frozen) == len(set(frozen))
    assert set(builder.categorical_features_) <= set(frozen)
    assert "horizon_gap" not in frozen
    # Changing parameters after fit changes nothing until the next fit.
    builder.windows = (3,)
    builder.min_lag = 1
    after = builder.transform(history, products)
    assert after.feature_names == frozen
    assert_same_features(expected.X, after.X, frozen)
    refit = builder.fit(history, products)
    assert list(refit.features_order_) != frozen


def test_pickled_builder_gives_the_same_features(
    history: pd.DataFrame, products: pd.DataFrame
) -> None:
    builder = FeatureBuilder(min_lag=7).fit(history, products)
    clone = pickle.loads(pickle.dumps(builder))
    rows = np.flatnonzero(history["date"] > history["date"].max() - pd.Timedelta(days=7))
    a = builder.transform(history, products, rows=rows)
    b = clone.transform(history, products, rows=rows)
    assert_same_features(a.X, b.X, a.feature_names)


# -- values against naive references -------------------------------------------------------------


@pytest.mark.parametrize("min_lag", [1, 5])
def test_unit_features_match_naive_loops(
    history: pd.DataFrame, products: pd.DataFrame, min_lag: int
) -> None:
    frame = history.copy()
    as_of = frame["date"].max() - pd.Timedelta(days=20)
    frame.loc[frame["date"] > as_of, "units"] = np.nan  # unknown tail, as the reader gives it
    builder = FeatureBuilder(min_lag=min_lag, **SMALL).fit(frame, products)
    fm = builder.transform(frame, products)
    lookback = SMALL["max_lookback"]
    for sku, part in frame.groupby("sku"):
        pos = part.index.to_numpy()
        u = part["units"].to_numpy(np.float64)
        for j in range(0, len(u), 7):  # every 7th row keeps the loop quick
            row = pos[j]
            e = j - min_lag
            past = u[max(e - 6, 0) : e + 1] if e >= 0 else np.array([])
            known = past[~np.isnan(past)]
            exp_mean = known.mean() if known.size else np.nan
            exp_std = known.std(ddof=1) if known.size > 1 else np.nan
            exp_min = known.min() if known.size else np.nan
            for name, expected in [
                ("roll_mean_7", exp_mean),
                ("roll_std_7", exp_std),
                ("roll_min_7", exp_min),
                ("roll_max_7", known.max() if known.size else np.nan),
                ("zero_share_7", (known == 0).mean() if known.size else np.nan),
            ]:
                np.testing.assert_allclose(
                    column(fm, name)[row],
                    expected,
                    rtol=2e-5,
                    atol=1e-6,
                    err_msg=f"{sku} {j} {name}",
                )
            for k in builder.plan_.lags:
                exp_lag = u[j - k] if j - k >= 0 else np.nan
                np.testing.assert_allclose(column(fm, f"lag_{k}")[row], exp_lag, rtol=1e-6)
            # EWM over the truncated span, weights (1 - alpha) ** age over known days.
            (alpha, span) = builder.plan_.ewm[0]
            ages = np.arange(span)
            idx = e - ages
            ok = (idx >= 0) & ~np.isnan(u[np.clip(idx, 0, None)])
            wts = (1 - alpha) ** ages[ok]
            exp_ewm = (wts * u[idx[ok]]).sum() / wts.sum() if ok.any() else np.nan
            np.testing.assert_allclose(column(fm, "ewm_0.3")[row], exp_ewm, rtol=2e-5)
            # Intermittency as of e.
            sales = [i for i in range(max(e - lookback + 1, 0), e + 1) if u[i] > 0]
            exp_since = e - sales[-1] if e >= 0 and sales else np.nan
            np.testing.assert_array_equal(column(fm, "days_since_sale")[row], exp_since)
            run = 0
            while e >= 0 and e - run >= 0 and u[e - run] == 0:
                run += 1
            exp_run = min(run, lookback) if e >= 0 and not np.isnan(u[e]) else np.nan
            np.testing.assert_array_equal(column(fm, "zero_run")[row], exp_run)


def test_covariate_features_match_pandas(history: pd.DataFrame, products: pd.DataFrame) -> None:
    builder = FeatureBuilder(min_lag=3, **SMALL).fit(history, products)
    fm = builder.transform(history, products)
    dates = pd.DatetimeIndex(history["date"])
    np.testing.assert_array_equal(column(fm, "dow"), dates.day_of_week)
    np.testing.assert_array_equal(column(fm, "dom"), dates.day)
    np.testing.assert_array_equal(column(fm, "month"), dates.month)
    np.testing.assert_array_equal(column(fm, "week"), dates.isocalendar()["week"].to_numpy())
    for name in ("is_event", "is_snap", "days_to_event", "promo_depth", "on_promotion", "price"):
        np.testing.assert_allclose(column(fm, name), history[name].to_numpy(np.float64), rtol=1e-6)
    grouped = history.groupby("sku")["price"]
    before = grouped.shift(7)
    np.testing.assert_allclose(
        column(fm, "price_change_7"), (history["price"] / before - 1).to_numpy(), rtol=1e-5
    )
    trailing = grouped.transform(lambda s: s.rolling(7, min_periods=1).mean().shift(3))
    np.testing.assert_allclose(
        column(fm, "price_ratio_7"), (history["price"] / trailing).to_numpy(), rtol=1e-5
    )
    promo_day = history["date"].where(history["on_promotion"] == 1)
    last_promo = promo_day.groupby(history["sku"]).ffill()
    since = (history["date"] - last_promo).dt.days
    since = since.where(since < SMALL["max_lookback"])
    np.testing.assert_array_equal(column(fm, "days_since_promo"), since.to_numpy(np.float64))


def test_hierarchy_codes_age_and_unseen_products(
    history: pd.DataFrame, products: pd.DataFrame
) -> None:
    builder = FeatureBuilder(**SMALL).fit(history, products)
    fm = builder.transform(history, products)
    depts = sorted(products["department"].unique())
    expected = history["sku"].map(products.set_index("sku")["department"]).map(depts.index)
    np.testing.assert_array_equal(column(fm, "department"), expected.to_numpy(np.float64))
    cap = builder.required_history
    start = history.groupby("sku")["date"].transform("min")
    launch = history["sku"].map(products.set_index("sku")["launch_date"])
    start = start.where(launch.isna() | (launch > start), launch)
    age = np.minimum((history["date"] - start).dt.days.to_numpy(np.float64), cap)
    np.testing.assert_array_equal(column(fm, "age"), age)
    assert column(fm, "age")[0] > 0  # the launched SKU is older than its first row
    # A SKU unknown to the products frame, or in an unseen store: codes -1, encodings NaN.
    renamed = products.assign(store=products["store"].replace({"CA_1": "WI_9"}))
    unseen = builder.transform(history, renamed.iloc[1:])
    first = (history["sku"] == products["sku"].iloc[0]).to_numpy()
    assert (column(unseen, "store")[first] == -1).all()
    assert np.isnan(column(unseen, "te_item_id")[first]).all()
    moved = history["sku"].map(renamed.set_index("sku")["store"]).eq("WI_9").to_numpy() & ~first
    assert moved.any() and (column(unseen, "store")[moved] == -1).all()


def test_mean_encodings_use_fit_rows_only(history: pd.DataFrame, products: pd.DataFrame) -> None:
    cutoff = history["date"].max() - pd.Timedelta(days=60)
    train = history.copy()
    train.loc[train["date"] > cutoff, "units"] = np.nan
    base = FeatureBuilder(**SMALL).fit(train, products)
    known = train[train["units"].notna()]
    store_of = known["sku"].map(products.set_index("sku")["store"])
    expected = known.groupby(store_of)["units"].mean()
    assert base.encodings_["store"] == pytest.approx(expected.to_dict(), rel=1e-6)
    assert base.n_fit_rows_ == len(known)
    # Different units outside the fit rows change nothing; inside they do.
    outside = history.copy()
    outside.loc[outside["date"] > cutoff, "units"] *= 5
    outside.loc[outside["date"] > cutoff, "units"] += 3
    again = FeatureBuilder(**SMALL).fit(outside.loc[outside["date"] <= cutoff], products)
    assert again.encodings_ == base.encodings_
    assert again.category_price_ == base.category_price_
    inside = train.copy()
    inside.loc[inside["date"] == cutoff, "units"] += 10
    moved = FeatureBuilder(**SMALL).fit(inside, products)
    assert moved.encodings_["store"] != base.encodings_["store"]


# -- rows, chunks, parity ------------------------------------------------------------------------


def test_rows_subset_equals_full_subset(history: pd.DataFrame, products: pd.DataFrame) -> None:
    builder = FeatureBuilder(min_lag=7).fit(history, products)
    full = builder.transform(history, products)
    rng = np.random.default_rng(3)
    mask = rng.random(len(history)) < 0.05
    by_mask = builder.transform(history, products, rows=mask)
    assert_same_features(full.X[mask], by_mask.X, full.feature_names)
    np.testing.assert_array_equal(by_mask.y, full.y[mask])
    positions = rng.choice(len(history), 40, replace=False)
    by_pos = builder.transform(history, products, rows=positions)
    assert_same_features(full.X[positions], by_pos.X, full.feature_names)
    assert list(by_pos.sku) == list(history["sku"].to_numpy()[positions])
    # Row order of the frame is not part of the contract.
    shuffled = history.sample(frac=1.0, random_state=4).reset_index(drop=True)
    other = builder.transform(shuffled, products)
    assert_same_features(lookup(full, other), other.X, full.feature_names)
    empty = builder.transform(history, products, rows=np.zeros(len(history), dtype=bool))
    assert empty.X.shape == (0, len(full.feature_names))


def test_integer_and_fractional_sum_paths_agree(products: pd.DataFrame) -> None:
    # Whole units take a running-sum path, other units day-aligned blocks; a SKU's features must
    # not depend on which one its chunk took (serving may see it alone, training beside others).
    whole = make_history(4, 500, seed=2, offsets=[0, 0, 150, 430])
    builder = FeatureBuilder(min_lag=7).fit(whole, products)
    alone = builder.transform(whole, products)
    mixed = whole.copy()
    last_sku = mixed["sku"] == mixed["sku"].iloc[-1]
    mixed.loc[last_sku, "units"] = mixed.loc[last_sku, "units"] * 0.37
    beside = builder.transform(mixed, products)
    keep = ~last_sku.to_numpy()
    assert_same_features(alone.X[keep], beside.X[keep], alone.feature_names)
    assert not np.array_equal(alone.X[~keep], beside.X[~keep], equal_nan=True)


@pytest.mark.parametrize("fractional", [True, False])
def test_stages_transformed_together_equal_each_alone(
    products: pd.DataFrame, fractional: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Serving transforms a model's stages (one lag floor each) from one grid whose window sums
    # they share; each must get bit for bit what its own transform gives, on its own rows.
    frame = make_history(4, 500, seed=5, offsets=[0, 0, 150, 430], fractional=fractional)
    near = FeatureBuilder(min_lag=7, promo_lookahead=3).fit(frame, products)
    far = FeatureBuilder(min_lag=28, windows=(7, 28, 91)).fit(frame, products)
    capped = FeatureBuilder(min_lag=14).fit(frame, products)
    capped.unit_caps_ = {str(frame["sku"].iloc[0]): 1.0}  # a grid of its own
    day = (frame["date"] - frame["date"].min()).dt.days.to_numpy()
    rows = [day >= 480, (day >= 440) & (day < 470), day % 11 == 0]
    builders = [near, far, capped]
    prepared = features_module.prepare(frame, products)
    for cells in (features_module.CHUNK_CELLS, 1):
        monkeypatch.setattr(features_module, "CHUNK_CELLS", cells)
        together = features_module.transform_stages(builders, rows, prepared)
        for builder, mask, fm in zip(builders, rows, together, strict=True):
            alone = builder.transform(frame, products, rows=mask)
            assert fm.feature_names == alone.feature_names
            assert_same_features(alone.X, fm.X, alone.feature_names)
            np.testing.assert_array_equal(fm.sku, alone.sku)
    assert not np.array_equal(
        capped.transform(frame, products, rows=rows[2]).X,
        FeatureBuilder(min_lag=14).fit(frame, products).transform(frame, products, rows=rows[2]).X,
        equal_nan=True,
    )
    empty = features_module.transform_stages([near], [np.zeros(len(frame), bool)], prepared)
    assert empty[0].X.shape == (0, len(near.feature_names_))


def test_bad_rows_are_refused(history: pd.DataFrame, products: pd.DataFrame) -> None:
    builder = FeatureBuilder(**SMALL).fit(history, products)
    with pytest.raises(ValueError, match="mask"):
        builder.transform(history, products, rows=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="range"):
        builder.transform(history, products, rows=[len(history)])
    last = builder.transform(history, products, rows=[-1])
    assert last.sku[0] == history["sku"].iloc[-1]


def test_chunking_does_not_change_features(
    history: pd.DataFrame, products: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    builder = FeatureBuilder(min_lag=7).fit(history, products)
    whole = builder.transform(history, products)
    monkeypatch.setattr(features_module, "CHUNK_CELLS", 1)  # one SKU per chunk
    chunked = builder.transform(history, products)
    assert_same_features(whole.X, chunked.X, whole.feature_names)


@pytest.mark.parametrize("min_lag", [7, 28])
def test_parity_serving_equals_training_direct(
    history: pd.DataFrame, products: pd.DataFrame, min_lag: int
) -> None:
    builder = FeatureBuilder(min_lag=min_lag).fit(history, products)
    full = builder.transform(history, products)
    last = history["date"].max()
    for back in (min_lag, 45, 100, 300):
        origin = last - pd.Timedelta(days=back)
        frame = serving_frame(history, origin, min_lag, builder.required_history)
        targets = (frame["date"] > origin).to_numpy()
        served = builder.transform(frame, products, rows=targets)
        assert len(served.y) >= min_lag and np.isnan(served.y).all()
        assert_same_features(lookup(full, served), served.X, full.feature_names)


def test_parity_serving_equals_training_recursive_first_day(
    history: pd.DataFrame, products: pd.DataFrame
) -> None:
    builder = FeatureBuilder(min_lag=1).fit(history, products)
    full = builder.transform(history, products)
    for back in (1, 30, 200):
        origin = history["date"].max() - pd.Timedelta(days=back)
        frame = serving_frame(history, origin, 28, builder.required_history)
        first = origin + pd.Timedelta(days=1)
        served = builder.transform(frame, products, rows=(frame["date"] == first).to_numpy())
        assert len(served.y) == (history["date"] == first).sum() > 0
        assert_same_features(lookup(full, served), served.X, full.feature_names)


def test_parity_breaks_with_less_than_required_history(
    history: pd.DataFrame, products: pd.DataFrame
) -> None:
    # Shows that the parity test can fail, and that required_history is not padded.
    builder = FeatureBuilder(min_lag=7, lags=(7, 8), max_lookback=30).fit(history, products)
    full = builder.transform(history, products)
    origin = history["date"].max() - pd.Timedelta(days=50)
    frame = serving_frame(history, origin, 7, builder.required_history - 1)
    served = builder.transform(frame, products, rows=(frame["date"] > origin).to_numpy())
    expected = lookup(full, served)
    same = (expected == served.X) | (np.isnan(expected) & np.isnan(served.X))
    assert not same.all()


def test_promo_lookahead_needs_required_future(
    history: pd.DataFrame, products: pd.DataFrame
) -> None:
    builder = FeatureBuilder(min_lag=7, promo_lookahead=5, **SMALL).fit(history, products)
    assert builder.required_future == 5 and "days_to_promo" in builder.features_order_
    full = builder.transform(history, products)
    next_promo = history["date"].where(history["on_promotion"] == 1).groupby(history["sku"]).bfill()
    until = (next_promo - history["date"]).dt.days
    np.testing.assert_array_equal(
        column(full, "days_to_promo"), until.where(until <= 5).to_numpy(np.float64)
    )
    origin = history["date"].max() - pd.Timedelta(days=40)
    frame = serving_frame(history, origin, 7 + builder.required_future, builder.required_history)
    targets = (
        (frame["date"] > origin) & (frame["date"] <= origin + pd.Timedelta(days=7))
    ).to_numpy()
    served = builder.transform(frame, products, rows=targets)
    assert_same_features(lookup(full, served), served.X, full.feature_names)


# -- leakage ---------------------------------------------------------------------------------------


COVARIATES = ["price", "on_promotion", "promo_depth", "promo_display", "promo_mailer", "is_holiday",
              "is_event", "is_snap", "days_to_event", "days_since_event"]  # fmt: skip


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_days=st.integers(20, 80),
    min_lag=st.integers(1, 8),
    origin_at=st.floats(0.0, 1.0),
    step=st.integers(1, 8),
    fractional=st.booleans(),
)
def test_no_feature_sees_data_after_its_origin(
    seed: int, n_days: int, min_lag: int, origin_at: float, step: int, fractional: bool
) -> None:
    frame = make_history(2, n_days, seed=seed, offsets=[0, n_days // 3], fractional=fractional)
    products = make_products(sorted(frame["sku"].unique()))
    builder = FeatureBuilder(min_lag=min_lag, **SMALL).fit(frame, products)
    dates = frame["date"]
    origin = dates.min() + pd.Timedelta(days=int(origin_at * (n_days - 1 - min_lag)))
    target = origin + pd.Timedelta(days=min(step, min_lag))  # a day in (origin, origin + min_lag]
    rows = (dates == target).to_numpy()
    assert rows.any()
    before = builder.transform(frame, products, rows=rows)
    rng = np.random.default_rng(seed)
    changed = frame.copy()
    after_origin = (dates > origin).to_numpy()
    noise = rng.poisson(5.0, after_origin.sum()).astype(np.float32)
    noise[rng.random(noise.size) < 0.2] = np.nan
    changed.loc[after_origin, "units"] = noise
    after_target = (dates > target).to_numpy()
    for c in COVARIATES:
        values = changed[c].to_numpy()
        changed[c] = values
        changed.loc[after_target, c] = (
            values[after_target] + rng.integers(1, 3, after_target.sum())
        ).astype(values.dtype)
    changed = as_history(changed)
    after = builder.transform(changed, products, rows=rows)
    assert_same_features(before.X, after.X, before.feature_names)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_days=st.integers(30, 80),
    min_lag=st.integers(1, 14),
    origin_at=st.floats(0.0, 1.0),
    step=st.integers(1, 14),
    listed_from=st.integers(0, 90),
)
def test_no_feature_sees_paid_prices_or_sales_after_its_origin(
    seed: int, n_days: int, min_lag: int, origin_at: float, step: int, listed_from: int
) -> None:
    """Order-line data: a paid price exists only where a sale did. Changing the units and the
    paid prices of every day after the origin (the target day's included), and everything after
    the target day, changes no feature of any target in (origin, origin + min_lag]."""
    frame = make_history(2, n_days, seed=seed, offsets=[0, n_days // 4])
    # SKU 0 has paid prices only; SKU 1 paid ones until a list price starts ``listed_from``.
    day = (frame["date"] - frame["date"].min()).dt.days.to_numpy()
    sku1 = (frame["sku"] == "ITEM_1_S").to_numpy()
    frame["price_paid"] = np.where(sku1 & (day >= listed_from), 0, 1).astype(np.int8)
    products = make_products(sorted(frame["sku"].unique()))
    builder = FeatureBuilder(min_lag=min_lag, **{**SMALL, "max_lookback": 20}).fit(frame, products)
    dates = frame["date"]
    origin = dates.min() + pd.Timedelta(days=int(origin_at * (n_days - 1 - min_lag)))
    target = origin + pd.Timedelta(days=min(step, min_lag))
    rows = (dates == target).to_numpy()
    before = builder.transform(frame, products, rows=rows)
    rng = np.random.default_rng(seed)
    changed = frame.copy()
    after_origin = (dates > origin).to_numpy()
    changed.loc[after_origin, "units"] = rng.poisson(5.0, after_origin.sum()).astype(np.float32)
    paid_late = after_origin & (frame["price_paid"] > 0).to_numpy()
    changed.loc[paid_late, "price"] = rng.uniform(0.5, 20.0, paid_late.sum()).astype(np.float32)
    after_target = (dates > target).to_numpy()
    for c in COVARIATES:
        values = changed[c].to_numpy()
        changed.loc[after_target, c] = (
            values[after_target] + rng.integers(1, 3, after_target.sum())
        ).astype(values.dtype)
    after = builder.transform(changed, products, rows=rows)
    assert_same_features(before.X, after.X, before.feature_names)


def test_a_listed_target_day_price_reaches_the_features_a_paid_one_does_not() -> None:
    frame = make_history(1, 60, seed=2)
    products = make_products(["ITEM_0_S"])
    builder = FeatureBuilder(min_lag=7, **SMALL).fit(frame, products)
    target = frame["date"].iloc[50]
    rows = (frame["date"] == target).to_numpy()
    for paid, moves in ((0, True), (1, False)):
        base = frame.assign(price_paid=np.int8(paid))
        changed = base.copy()
        changed.loc[changed["date"] == target, "price"] *= 2
        a = column(builder.transform(base, products, rows=rows), "price")
        b = column(builder.transform(changed, products, rows=rows), "price")
        assert (a != b).all() == moves
    # A paid target day reads the last price known at the origin (7 days before).
    paid = frame.assign(price_paid=np.int8(1))
    known = frame.loc[frame["date"] == target - pd.Timedelta(days=7), "price"].to_numpy()
    assert column(builder.transform(paid, products, rows=rows), "price") == pytest.approx(known)


def test_data_up_to_the_origin_does_reach_the_features() -> None:
    # The leakage property is not vacuous: the origin's own units feed the lag-min_lag feature.
    frame = make_history(1, 60, seed=5)
    products = make_products(["ITEM_0_S"])
    builder = FeatureBuilder(min_lag=3, **SMALL).fit(frame, products)
    origin = frame["date"].iloc[40]
    rows = (frame["date"] == origin + pd.Timedelta(days=3)).to_numpy()
    before = builder.transform(frame, products, rows=rows)
    changed = frame.copy()
    changed.loc[changed["date"] == origin, "units"] += 7
    after = builder.transform(changed, products, rows=rows)
    moved = {
        n for n, a, b in zip(before.feature_names, before.X[0], after.X[0], strict=True) if a != b
    }
    assert {"lag_3", "roll_mean_3", "roll_max_7"} <= moved


def test_unused_windowed_features_are_zeros_and_the_rest_unchanged(
    history: pd.DataFrame, products: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller that drops every windowed feature (the attribute-only cold-start model) gets
    them as zeros, their windows never computed, and every other column as computed in full;
    while one windowed feature is wanted, everything is computed."""
    from training.feature_grid import Grid

    fitted = FeatureBuilder(**SMALL).fit(history, products)
    full = fitted.transform(history, products)
    names = full.feature_names
    windowed = frozenset(n for n in names if n.startswith(("roll_", "ewm_", "zero_share_")))
    calls: list[int] = []
    real = Grid.extremes

    def counted(self: Grid, w: int) -> Any:
        calls.append(w)
        return real(self, w)

    monkeypatch.setattr(Grid, "extremes", counted)
    skipped = fitted.transform(history, products, unused=windowed)
    assert calls == []
    partly = fitted.transform(history, products, unused=windowed - {"roll_mean_3"})
    assert calls
    for i, name in enumerate(names):
        if name in windowed:
            assert (skipped.X[:, i] == 0).all(), name
        else:
            np.testing.assert_array_equal(skipped.X[:, i], full.X[:, i], err_msg=name)
    np.testing.assert_array_equal(partly.X, full.X)


def test_sku_totals_by_pieces_of_skus_are_the_whole_history_totals(
    history: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sku_totals works through pieces of whole SKUs (bounded memory at M5 scale): with pieces
    of a few rows its totals and caps are the one-piece totals, index included."""
    from training import cleaning

    whole = features_module._sku_totals(history, None)
    monkeypatch.setattr(cleaning, "CLEAN_PIECE_ROWS", 7)
    pd.testing.assert_frame_equal(features_module.sku_totals(history, None), whole)
    assert len(whole) == history["sku"].nunique()
