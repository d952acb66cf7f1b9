"""Every model of the zoo on a small synthetic problem with a clear signal, plus the baselines."""

from __future__ import annotations

import io
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from training import estimators as E

FEATURES = ["x1", "noise", "lag_7", "weekday", "store"]
CATEGORICAL = ["weekday", "store"]

# Small budgets keep the whole module to a few seconds.
FAST: dict[str, dict[str, Any]] = {
    "lgbm_tweedie": {
        "n_estimators": 60,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "num_threads": 1,
    },
    "lgbm_poisson": {
        "n_estimators": 60,
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "num_threads": 1,
    },
    "lgbm_l2": {"n_estimators": 60, "num_leaves": 15, "min_data_in_leaf": 20, "num_threads": 1},
    "linear": {},
    "tree": {"max_depth": 6, "min_samples_leaf": 20},
    "forest": {"n_estimators": 20, "max_samples": 1000, "n_jobs": 1},
    "mlp": {"hidden_layer_sizes": (16,), "max_iter": 60},
}


def make_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """y ~ Poisson(exp(0.3 + 1.2 * x1 + weekday effect)); NaN lags and unknown (-1) stores."""
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(-1.0, 1.0, n)
    weekday = rng.integers(0, 7, n)
    store = rng.integers(-1, 4, n)
    effect = np.array([0.0, 0.1, 0.0, 0.2, 0.5, 0.9, 0.7])[weekday]
    y = rng.poisson(np.exp(0.3 + 1.2 * x1 + effect)).astype(np.float64)
    lag = rng.poisson(np.exp(0.3 + 1.2 * x1)).astype(np.float64)
    lag[rng.random(n) < 0.2] = np.nan
    noise = rng.normal(size=n)
    X = np.column_stack([x1, noise, lag, weekday, store]).astype(np.float32)
    return X, y


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    X, y = make_problem(3000, seed=0)
    return {"X": X[:2400], "y": y[:2400], "X_test": X[2400:], "y_test": y[2400:]}


def fit(name: str, data: dict[str, np.ndarray], **extra: Any) -> E.Estimator:
    est = E.make_estimator(name, **{**FAST[name], **extra})
    return est.fit(data["X"], data["y"], feature_names=FEATURES, categorical=CATEGORICAL)


@pytest.fixture(scope="module", params=sorted(E.REGISTRY))
def fitted(request: pytest.FixtureRequest, data: dict[str, np.ndarray]) -> E.Estimator:
    return fit(request.param, data)


def test_registry_names() -> None:
    expected = {"lgbm_tweedie", "lgbm_poisson", "lgbm_l2", "linear", "tree", "forest", "mlp"}
    assert set(E.REGISTRY) == expected
    for name in E.REGISTRY:
        assert E.make_estimator(name).name == name


def test_beats_the_mean_and_predicts_non_negative(
    fitted: E.Estimator, data: dict[str, np.ndarray]
) -> None:
    pred = fitted.predict(data["X_test"])
    assert pred.dtype == np.float64 and pred.shape == data["y_test"].shape
    assert (pred >= 0).all()
    mse_model = np.mean((pred - data["y_test"]) ** 2)
    mse_mean = np.mean((data["y"].mean() - data["y_test"]) ** 2)
    assert mse_model < 0.8 * mse_mean, (fitted.name, mse_model, mse_mean)


def test_pickle_round_trip_is_identical(fitted: E.Estimator, data: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    joblib.dump(fitted, buf)
    buf.seek(0)
    loaded = joblib.load(buf)
    np.testing.assert_array_equal(loaded.predict(data["X_test"]), fitted.predict(data["X_test"]))
    assert loaded.feature_names_ == FEATURES


def test_feature_importance_keys(fitted: E.Estimator) -> None:
    imp = fitted.feature_importance()
    if fitted.name in {"linear", "mlp"}:
        assert imp is None
        return
    assert imp is not None and list(imp) == FEATURES
    assert sum(imp.values()) == pytest.approx(1.0)
    assert max(imp, key=lambda k: imp[k]) == "x1"  # the strongest signal


@pytest.mark.parametrize("name", sorted(E.REGISTRY))
def test_predict_before_fit_raises(name: str, data: dict[str, np.ndarray]) -> None:
    est = E.make_estimator(name)
    with pytest.raises(NotFittedError):
        est.predict(data["X_test"])
    with pytest.raises(NotFittedError):
        est.feature_importance()


def test_wrong_width_is_rejected(fitted: E.Estimator, data: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="columns"):
        fitted.predict(data["X_test"][:, :3])


@pytest.mark.parametrize("name", ["lgbm_tweedie", "lgbm_poisson", "lgbm_l2"])
def test_lgbm_contributions_sum_to_raw_score(name: str, data: dict[str, np.ndarray]) -> None:
    est = fit(name, data)
    assert isinstance(est, E.LGBMEstimator)
    X = data["X_test"][:50]
    contrib = est.contributions(X)
    assert contrib.shape == (50, len(FEATURES) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), est.raw_predict(X), rtol=1e-6, atol=1e-6)
    link = np.exp if name != "lgbm_l2" else (lambda s: np.clip(s, 0, None))
    np.testing.assert_allclose(link(contrib.sum(axis=1)), est.predict(X), rtol=1e-6)


def test_lgbm_early_stopping_and_determinism(data: dict[str, np.ndarray]) -> None:
    est = E.make_estimator("lgbm_tweedie", **{**FAST["lgbm_tweedie"], "n_estimators": 300})
    est.fit(
        data["X"],
        data["y"],
        feature_names=FEATURES,
        categorical=CATEGORICAL,
        eval_set=(data["X_test"], data["y_test"]),
    )
    assert isinstance(est, E.LGBMEstimator)
    assert 0 < est.best_iteration_ < 300  # 15-leaf trees at 0.05 overfit 2,400 rows before 300
    again = fit("lgbm_tweedie", data)
    assert again.booster_.current_iteration() == 60  # type: ignore[attr-defined]
    twin = fit("lgbm_tweedie", data)
    np.testing.assert_array_equal(again.predict(data["X_test"]), twin.predict(data["X_test"]))


def test_lgbm_params_are_the_brief_defaults() -> None:
    est = E.make_estimator("lgbm_tweedie")
    assert isinstance(est, E.LGBMEstimator)
    params = est.lgb_params()
    assert params["objective"] == "tweedie" and params["tweedie_variance_power"] == 1.1
    assert est.n_estimators == 500 and params["verbosity"] == -1
    assert E.make_estimator("lgbm_l2").lgb_params()["objective"] == "regression"  # type: ignore[attr-defined]
    assert "objective" in est.get_params()
    rebuilt = E.make_estimator("lgbm_tweedie", **est.get_params())
    assert rebuilt.get_params() == est.get_params()
    with pytest.raises(ValueError, match="lgbm_tweedie"):
        E.make_estimator("lgbm_poisson", **est.get_params())


@pytest.mark.parametrize("name", ["linear", "forest", "mlp"])
def test_seeded_models_are_deterministic(name: str, data: dict[str, np.ndarray]) -> None:
    a = fit(name, data).predict(data["X_test"])
    b = fit(name, data).predict(data["X_test"])
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(E.REGISTRY))
def test_sample_weight_changes_the_fit(name: str, data: dict[str, np.ndarray]) -> None:
    # Weighting the above-average rows pulls predictions up: the fit must use the weights.
    weight = np.where(data["y"] > data["y"].mean(), 1.0, 0.1)
    est = E.make_estimator(name, **FAST[name])
    est.fit(
        data["X"], data["y"], feature_names=FEATURES, categorical=CATEGORICAL, sample_weight=weight
    )
    plain = fit(name, data)
    X = data["X_test"]
    assert est.predict(X).mean() > plain.predict(X).mean()


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        E.make_estimator("prophet")
    X, y = make_problem(50, seed=1)
    est = E.make_estimator("tree")
    with pytest.raises(ValueError, match="non-negative"):
        est.fit(X, -y, feature_names=FEATURES, categorical=CATEGORICAL)
    with pytest.raises(ValueError, match="categorical"):
        est.fit(X, y, feature_names=FEATURES, categorical=["brand"])


# --- baselines --------------------------------------------------------------------------------


def test_seasonal_naive_repeats_the_last_week() -> None:
    hist = np.array([np.arange(14, dtype=float), np.arange(14, dtype=float)[::-1]])
    fc = E.seasonal_naive(hist, horizon=10)
    assert fc.shape == (2, 10)
    np.testing.assert_array_equal(fc[0], [7, 8, 9, 10, 11, 12, 13, 7, 8, 9])
    np.testing.assert_array_equal(fc[1], [6, 5, 4, 3, 2, 1, 0, 6, 5, 4])
    # Day T+h takes day T+h-7 whatever the history's length (weekday alignment).
    np.testing.assert_array_equal(E.seasonal_naive(hist[:, :10], 3)[0], [3, 4, 5])


def test_seasonal_naive_is_nan_safe() -> None:
    nan = np.nan
    hist = np.array(
        [
            [nan] * 11 + [4.0, 2.0, 6.0],  # started 3 days ago: unseen weekdays get the mean, 4
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, nan, 11.0, 12.0, 13.0, 14.0],
            [nan] * 14,
        ]
    )
    fc = E.seasonal_naive(hist, horizon=7)
    np.testing.assert_array_equal(fc[0], [4, 4, 4, 4, 4.0, 2.0, 6.0])
    np.testing.assert_array_equal(fc[1], [8, 9, 3, 11, 12, 13, 14])  # the gap falls back a week
    np.testing.assert_array_equal(fc[2], np.zeros(7))
    assert not np.isnan(fc).any()


def test_moving_average() -> None:
    hist = np.array([np.r_[np.full(30, 100.0), np.arange(28, dtype=float)], np.full(58, np.nan)])
    hist[0, -1] = np.nan  # the mean is over observed days only: 0..26
    fc = E.moving_average(hist, horizon=5)
    np.testing.assert_allclose(fc[0], np.full(5, 13.0))
    np.testing.assert_array_equal(fc[1], np.zeros(5))
    np.testing.assert_allclose(E.moving_average(hist, 2, window=3)[0], [25.5, 25.5])
    assert set(E.BASELINES) == {
        "seasonal_naive",
        "moving_average",
        "moving_average_56",
        "ses",
        "ses_weekly",
        "croston",
        "tsb",
        "moving_average_dow",
        "ses_dow",
        "tsb_dow",
    }


def test_mlp_subsamples_rows_within_budget(data: dict[str, np.ndarray]) -> None:
    small = fit("mlp", data, max_samples=600)
    full = fit("mlp", data)
    assert isinstance(small, E.MLPEstimator) and isinstance(full, E.MLPEstimator)
    assert 0 < small.n_iter_ <= 60
    pred = small.predict(data["X_test"])
    assert (pred >= 0).all()
    assert not np.array_equal(pred, full.predict(data["X_test"]))


def test_lgbm_keeps_trees_only_after_fit(data: dict[str, np.ndarray]) -> None:
    """The fitted booster holds no training dataset or state (it would pin ~1 GB at scale)."""
    est = fit("lgbm_tweedie", data)
    booster = est.booster_  # type: ignore[attr-defined]
    assert "train_set" not in vars(booster)
    assert booster.num_trees() == est.get_params()["n_estimators"]
    again = fit("lgbm_tweedie", data)
    np.testing.assert_array_equal(est.predict(data["X_test"]), again.predict(data["X_test"]))
    assert est.feature_importance() and est.contributions(data["X_test"][:5]).shape[0] == 5


def test_lgbm_fit_later_trains_the_model_fit_would() -> None:
    """fit_later bins now and trains on the call: the same booster as fit."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(600, 4)).astype(np.float32)
    y = np.exp(0.5 * X[:, 0]) + rng.poisson(1.0, size=600)
    params = {"n_estimators": 15, "num_leaves": 7, "min_data_in_leaf": 10, "num_threads": 1}
    names = ["a", "b", "c", "d"]
    fitted = E.make_estimator("lgbm_tweedie", **params).fit(
        X, y, feature_names=names, categorical=[]
    )
    later = E.make_estimator("lgbm_tweedie", **params)
    assert isinstance(later, E.LGBMEstimator)
    train = later.fit_later(X, y, feature_names=names, categorical=[])
    with pytest.raises(NotFittedError):
        later.predict(X)
    assert train() is later
    np.testing.assert_array_equal(fitted.predict(X), later.predict(X))
    with pytest.raises(ValueError, match="non-negative"):
        later.fit_later(X, -y, feature_names=names, categorical=[])


# --- families describe themselves ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(E.REGISTRY))
def test_a_family_says_what_it_offers(name: str, fitted_by_name: Any) -> None:
    """Its class attributes match what it does: contributions, link, tree budget, defaults."""
    est = fitted_by_name(name)
    X = make_problem(50, seed=5)[0]
    contrib = est.contributions(X)
    assert (contrib is not None) == est.gives_contributions
    if contrib is not None:
        raw = contrib.sum(axis=1)
        units = np.exp(raw) if est.link == "log" else np.clip(raw, 0.0, None)
        np.testing.assert_allclose(units, est.predict(X), rtol=1e-5, atol=1e-6)
    fresh = E.make_estimator(name)
    defaults = type(fresh).default_params()
    assert defaults and set(defaults) <= set(fresh.get_params())
    # A registry entry may pin some (the LightGBM objective); every other default is the class's.
    pinned = set(getattr(E.REGISTRY[name], "keywords", {}))
    assert {k: v for k, v in fresh.get_params().items() if k not in pinned} == {
        k: v for k, v in defaults.items() if k not in pinned
    }
    budget = fresh.budget_params(2)
    if fresh.shares_tree_budget:
        assert budget["n_estimators"] == round(fresh.get_params()["n_estimators"] / 2)
    else:
        assert budget == {}


@pytest.fixture(scope="module")
def fitted_by_name(data: dict[str, np.ndarray]) -> Any:
    cache: dict[str, E.Estimator] = {}

    def get(name: str) -> E.Estimator:
        if name not in cache:
            cache[name] = fit(name, data)
        return cache[name]

    return get


def test_model_names_come_from_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    assert E.model_names() == (*E.BASELINES, *E.REGISTRY)
    monkeypatch.setitem(E.REGISTRY, "extra", E.LinearEstimator)
    assert "extra" in E.model_names()
    assert E.family("seasonal_naive") is None
    assert E.family("lgbm_l2").link == "identity"  # type: ignore[union-attr]
    assert E.family("lgbm_poisson").link == "log"  # type: ignore[union-attr]


def test_lgbm_small_inputs_predict_the_same_on_one_thread(data: dict[str, np.ndarray]) -> None:
    est = fit("lgbm_tweedie", data, num_threads=2)
    X = data["X_test"]
    small = np.concatenate([est.predict(X[i : i + 10]) for i in range(0, len(X), 10)])
    assert len(X) >= est.small_predict_rows // 2
    np.testing.assert_array_equal(small, est.predict(X))


# --- strong baselines: hand-computed values ------------------------------------------------------

INTERMITTENT = np.array([[0, 0, 3, 0, 2, 0, 0, 4]], dtype=np.float64)


def test_baselines_are_model_names() -> None:
    for name in ("moving_average_56", "ses", "ses_weekly", "croston", "tsb", "ses_dow", "tsb_dow"):
        assert name in E.model_names() and name in E.BASELINES
        assert E.family(name) is None


def test_ses_by_hand_and_closed_form() -> None:
    # level 2 -> 2 + 0.5 (4 - 2) = 3 -> 3 + 0.5 (6 - 3) = 4.5
    out = E.BASELINES["ses"](np.array([[2.0, 4.0, 6.0]]), 3)
    assert out.shape == (1, 3)
    from training.estimators.baselines import ses

    np.testing.assert_allclose(ses(np.array([[2.0, 4.0, 6.0]]), 2, alpha=0.5), [[4.5, 4.5]])
    # Closed form: level_T = (1-a)^(T-1) y_0 + sum_k a (1-a)^(T-1-k) y_k.
    rng = np.random.default_rng(3)
    y = rng.poisson(4.0, 50).astype(np.float64)
    a = 0.3
    weights = a * (1 - a) ** (len(y) - 1 - np.arange(1, len(y)))
    expected = (1 - a) ** (len(y) - 1) * y[0] + float(np.sum(weights * y[1:]))
    np.testing.assert_allclose(ses(y[None, :], 1, alpha=a)[0, 0], expected)


def test_ses_picks_a_fast_weight_after_a_level_shift_and_a_slow_one_on_noise() -> None:
    from training.estimators.baselines import ses_fit

    rng = np.random.default_rng(5)
    shift = np.r_[np.full(60, 2.0), np.full(60, 20.0)] + rng.normal(0, 0.1, 120)
    noise = 10.0 + rng.normal(0, 3.0, 120)
    alpha = ses_fit(np.vstack([shift, noise]))
    assert alpha[0] >= 0.3 and alpha[1] <= 0.1


def test_ses_weekly_keeps_the_weekday_shape() -> None:
    week = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 8.0, 8.0])
    hist = np.tile(week, 10)[None, :]  # ends on a "Sunday": the next day is column 0
    out = E.BASELINES["ses_weekly"](hist, 14)[0]
    assert out[5] > 2 * out[0] and out[6] > 2 * out[1]
    np.testing.assert_allclose(out[:7].mean(), week.mean(), rtol=0.1)
    np.testing.assert_allclose(out[:7], out[7:])
    from training.estimators.baselines import ses_weekly

    # Unshrunk, a pure weekly pattern is reproduced exactly.
    np.testing.assert_allclose(ses_weekly(hist, 14, shrink=0.0)[0], np.tile(week, 2))


DOW = ("moving_average_dow", "ses_dow", "tsb_dow")


def test_weekday_shape_by_hand() -> None:
    from training.estimators.baselines import weekday_shape

    # Two weeks ending on a "Sunday" (the next day is column 0): 2 units Monday to Friday,
    # 0 on Saturday, 5 on Sunday: 30 units a fortnight, the week's shares 2/15 .. 0 .. 5/15.
    week = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 0.0, 5.0])
    hist = np.tile(week, 2)[None, :]
    share = week / week.sum()
    # 30 units against 20 pseudo-units spread flat: 7 (30 share + 20/7) / 50.
    np.testing.assert_allclose(
        weekday_shape(hist, 9, prior_units=20.0)[0], np.tile(7 * (30 * share + 20 / 7) / 50, 2)[:9]
    )
    np.testing.assert_allclose(weekday_shape(hist, 7, prior_units=0.0)[0], 7 * share)
    # Unobserved days leave their weekday's mean alone; a SKU that never sold stays flat.
    gappy = hist.copy()
    gappy[0, 0] = np.nan
    np.testing.assert_allclose(weekday_shape(gappy, 7, prior_units=0.0)[0], 7 * share)
    np.testing.assert_allclose(weekday_shape(np.zeros((1, 14)), 7)[0], np.ones(7))
    # Only the last `weeks` weeks count: a shape from long ago is forgotten.
    old = np.r_[np.tile([0.0, 0, 0, 0, 0, 0, 70.0], 4), np.tile([10.0] * 7, 2)][None, :]
    np.testing.assert_allclose(weekday_shape(old, 7, weeks=2, prior_units=0.0)[0], np.ones(7))


def test_weekday_shaped_baselines_keep_their_level_and_take_the_shape() -> None:
    rng = np.random.default_rng(7)
    week = np.array([3.0, 3.0, 3.0, 3.0, 3.0, 0.0, 6.0])
    hist = rng.poisson(np.tile(week, 52)).astype(np.float64)[None, :]
    for name, flat in (("moving_average_dow", "moving_average"), ("ses_dow", "ses"),
                       ("tsb_dow", "tsb")):  # fmt: skip
        shaped, level = E.BASELINES[name](hist, 14)[0], E.BASELINES[flat](hist, 14)[0]
        # The same units over a week as the flat baseline (the shape has mean 1) ...
        np.testing.assert_allclose(shaped[:7].mean(), level[0], rtol=1e-9)
        # ... and Saturdays, never sold on, near zero: 900 units a year against 20 pseudo-units.
        assert shaped[5] < 0.05 * level[0] and shaped[6] > 1.8 * level[0], name
        np.testing.assert_allclose(shaped[:7], shaped[7:])


def test_croston_by_hand() -> None:
    from training.estimators.baselines import croston

    # z0 = mean size 3, p0 = 8/3; demand days 2, 4, 7 (intervals 3, 2, 3), alpha 0.5:
    # z 3 -> 2.5 -> 3.25, p 2.8333 -> 2.41667 -> 2.70833; forecast 3.25 / 2.70833 = 1.2
    np.testing.assert_allclose(croston(INTERMITTENT, 2, alpha=0.5, sba=False), [[1.2, 1.2]])
    np.testing.assert_allclose(croston(INTERMITTENT, 1, alpha=0.5, sba=True), [[1.2 * 0.75]])


def test_tsb_by_hand_and_decay() -> None:
    from training.estimators.baselines import tsb

    # p0 = 3/8, z0 = 3; p follows every day, z the demand days (alpha = beta = 0.5):
    # p ends 0.57958984375, z 3.25 -> 1.8836669921875
    np.testing.assert_allclose(
        tsb(INTERMITTENT, 1, alpha=0.5, beta=0.5), [[3.25 * 0.57958984375]], rtol=1e-12
    )
    # A SKU that stopped selling decays toward zero (Croston would keep forecasting it).
    stopped = np.r_[np.tile([0.0, 2.0], 30), np.zeros(40)][None, :]
    assert tsb(stopped, 1)[0, 0] < 0.2 * E.BASELINES["croston"](stopped, 1)[0, 0]


def test_new_baselines_are_nan_safe() -> None:
    hist = np.array([[np.nan, np.nan, 1.0, 0.0, 2.0], [np.nan] * 5])
    for name in ("moving_average_56", "ses", "ses_weekly", "croston", "tsb", *DOW):
        out = E.BASELINES[name](hist, 3)
        assert out.shape == (2, 3) and np.isfinite(out).all(), name
        assert (out >= 0).all() and (out[1] == 0).all(), name
