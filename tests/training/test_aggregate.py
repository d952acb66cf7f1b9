"""Totals above the SKU: coherent means and quantiles from joint sample paths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.aggregate import (
    UnknownLevel,
    group_keys,
    joint_totals,
    replay,
    total_paths,
    totals_frame,
)
from training.inventory import ResidualBlocks

H = 14


def _backtest(
    rng: np.random.Generator, levels: np.ndarray, folds: int, shock: float
) -> pd.DataFrame:
    """Backtest rows where every SKU of a (fold, day) shares one multiplicative shock."""
    n = len(levels)
    common = rng.normal(0.0, shock, (folds, 1, H))  # one per day of a fold, shared by all SKUs
    y = rng.poisson(np.clip(levels[None, :, None] * (1.0 + common), 0.0, None))  # (f, n, H)
    fold, sku, h = np.meshgrid(np.arange(folds), np.arange(n), np.arange(1, H + 1), indexing="ij")
    return pd.DataFrame(
        {
            "fold": fold.ravel(),
            "sku": [f"S{i:03d}" for i in sku.ravel()],
            "horizon": h.ravel(),
            "y": y.ravel().astype(float),
            "yhat": levels[sku.ravel()],
        }
    )


def _future_totals(
    rng: np.random.Generator, levels: np.ndarray, days: int, shock: float
) -> np.ndarray:
    """Held-out daily totals of all SKUs from the same process (days, )."""
    common = rng.normal(0.0, shock, days)
    return np.array([rng.poisson(np.clip(levels * (1 + c), 0, None)).sum() for c in common])


def test_total_means_are_the_sums_of_the_sku_means_every_group_and_day() -> None:
    rng = np.random.default_rng(0)
    levels = rng.uniform(0.2, 30.0, 12)
    blocks = ResidualBlocks.from_backtest(_backtest(rng, levels, folds=3, shock=0.1))
    means = rng.uniform(0.0, 40.0, (12, H))
    means[3, :4] = np.nan  # launches on day 5: those days add nothing
    codes = np.arange(12) % 3
    skus = [f"S{i:03d}" for i in range(12)]
    tot = joint_totals(means, codes, ["a", "b", "c"], skus, blocks, levels=[0.1, 0.5, 0.9])
    for g in range(3):
        expected = np.nansum(means[codes == g], axis=0)
        np.testing.assert_allclose(tot.mean[g], expected, rtol=0, atol=1e-9)
        assert tot.period_mean[g] == pytest.approx(expected.sum(), abs=1e-9)
    assert tot.skus.tolist() == [4, 4, 4]
    q = tot.quantiles
    assert (np.diff(q, axis=2) >= 0).all() and (q >= 0).all()
    assert np.array_equal(q, np.rint(q))  # whole units
    assert tot.paths == 3 * H


def test_joint_paths_cover_totals_that_move_together_and_summed_quantiles_do_not() -> None:
    """SKUs sharing a daily shock: the joint band covers ~80% of the held-out totals; reading
    each SKU at a different cut-off (independent SKUs) makes it far too narrow, and the sum of
    the SKUs' own P10 and P90 far too wide."""
    rng = np.random.default_rng(1)
    n, shock = 60, 0.15
    levels = rng.uniform(1.0, 20.0, n)
    blocks = ResidualBlocks.from_backtest(_backtest(rng, levels, folds=20, shock=shock))
    skus = [f"S{i:03d}" for i in range(n)]
    means = np.tile(levels[:, None], (1, H))
    tot = joint_totals(means, np.zeros(n, dtype=int), ["all"], skus, blocks, levels=[0.1, 0.9])
    actual = _future_totals(rng, levels, 400, shock)
    lo, hi = tot.quantiles[0, 0, 0], tot.quantiles[0, 0, 1]
    joint = np.mean((actual >= lo) & (actual <= hi))
    assert 0.74 <= joint <= 0.86, joint

    # The same paths with each SKU at its own cut-off: the shared shocks cancel out.
    shuffled = blocks.subset(np.ones(len(blocks), dtype=bool))
    shuffled.fold = rng.permutation(shuffled.fold)
    alone = joint_totals(
        means, np.zeros(n, dtype=int), ["all"], skus, shuffled, levels=[0.1, 0.9]
    ).quantiles[0, 0]
    independent = np.mean((actual >= alone[0]) & (actual <= alone[1]))
    assert independent < joint - 0.2, (independent, joint)

    # Each SKU's own P10-P90 from the same sampler, summed: a band as if all moved as one.
    per_sku = joint_totals(means, np.arange(n), skus, skus, blocks, levels=[0.1, 0.9]).quantiles[
        :, 0, :
    ]
    summed = np.mean((actual >= per_sku[:, 0].sum()) & (actual <= per_sku[:, 1].sum()))
    assert summed > 0.95 and (per_sku[:, 1].sum() - per_sku[:, 0].sum()) > 1.5 * (hi - lo)


def test_skus_outside_the_backtest_borrow_the_nearest_block_of_each_cut_off() -> None:
    rng = np.random.default_rng(2)
    levels = np.array([1.0, 10.0, 100.0])
    blocks = ResidualBlocks.from_backtest(_backtest(rng, levels, folds=2, shock=0.1))
    joint = blocks.joint(np.array(["S000", "NEW", "S002"], dtype=object), np.array([1, 90, 100]))
    assert joint.shape == (2, 3)
    for fold in range(2):
        assert blocks.sku[joint[fold, 0]] == "S000" and blocks.fold[joint[fold, 0]] == fold
        assert blocks.sku[joint[fold, 1]] == "S002"  # level 90: nearest to 100
        assert blocks.fold[joint[fold, 1]] == fold  # the same cut-off as the others


def test_group_keys_and_unknown_levels() -> None:
    products = pd.DataFrame(
        {"sku": ["a", "b", "c"], "category": ["X", "X", None], "store": ["S1", "S2", "S1"]}
    )
    assert group_keys(products, "total").tolist() == ["total"] * 3
    assert group_keys(products, "category").tolist() == ["X", "X", "(none)"]
    assert group_keys(products, "category_store").tolist() == ["X/S1", "X/S2", "(none)/S1"]
    with pytest.raises(UnknownLevel, match="brand"):
        group_keys(products, "brand")


def test_totals_frame_from_a_forecast_all_frame() -> None:
    rng = np.random.default_rng(3)
    levels = rng.uniform(0.5, 10.0, 4)
    blocks = ResidualBlocks.from_backtest(_backtest(rng, levels, folds=2, shock=0.1))
    dates = pd.date_range("2026-01-01", periods=7).date
    fc = pd.DataFrame(
        {
            "sku": np.repeat([f"S{i:03d}" for i in range(4)], 7),
            "date": np.tile(dates, 4),
            "mean": rng.uniform(0, 10, 28),
            "cold_start": False,
        }
    )
    products = pd.DataFrame(
        {"sku": [f"S{i:03d}" for i in range(4)], "category": ["A", "A", "B", "B"],
         "store": ["s", "t", "s", "t"]}
    )  # fmt: skip
    out = totals_frame(fc, products, blocks, levels=["category", "store"], quantiles=[0.1, 0.9])
    assert list(out.columns) == ["level", "key", "date", "skus", "mean", "p10", "p90"]
    assert len(out) == (2 + 2) * 7
    merged = fc.merge(products, on="sku")
    for level in ("category", "store"):
        expected = merged.groupby([level, "date"])["mean"].sum()
        got = out[out["level"] == level].set_index(["key", "date"])["mean"]
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-9)


def test_replay_reports_each_levels_coverage_on_the_backtest() -> None:
    """Cross-conformal replay per level: joint bands near 80%, summed SKU quantiles far above."""
    rng = np.random.default_rng(4)
    n, shock = 40, 0.15
    levels = rng.uniform(1.0, 20.0, n)
    rows = _backtest(rng, levels, folds=12, shock=shock)
    products = pd.DataFrame(
        {
            "sku": [f"S{i:03d}" for i in range(n)],
            "category": np.where(np.arange(n) % 2 == 0, "A", "B"),
            "store": [f"s{i % 4}" for i in range(n)],
        }
    )
    out = replay(rows, products, levels=("category", "store", "total"))
    assert set(out) == {"category", "store", "total"}
    assert out["total"]["points"] == 12 * H and out["store"]["points"] == 12 * H * 4
    for level, scores in out.items():
        assert 0.7 <= scores["coverage_joint"] <= 0.9, (level, scores)
        assert scores["coverage_summed"] > scores["coverage_joint"] + 0.08, (level, scores)
    with pytest.raises(ValueError, match="two folds"):
        replay(rows[rows["fold"] == 0], products)


def test_a_residual_is_never_amplified_by_a_level_the_forecast_has_caught_up_with() -> None:
    """A surge the backtest missed (3 forecast, 248 sold) adds its 245 units to a SKU now
    forecast at 44, not 245 * sqrt(45 / 4) = 822; where the level fell the residual shrinks as
    the SKU sampler's does; at the same level the backtest's actual comes back."""
    seen = np.array([3.0, 9.0, 5.0])
    actual = np.array([248.0, 0.0, 8.0])
    r = (actual - seen) / np.sqrt(seen + 1.0)
    now = np.array([44.0, 1.0, 5.0])
    paths = total_paths(now, r, seen)
    assert paths[0] == pytest.approx(44.0 + 245.0)
    assert paths[1] == pytest.approx(max(0.0, 1.0 + r[1] * np.sqrt(2.0))) and paths[1] == 0.0
    assert paths[2] == pytest.approx(8.0)
    # Through joint_totals: one SKU, one fold, the total of its surge day.
    rows = pd.DataFrame(
        {"fold": 0, "sku": "S", "horizon": np.arange(1, H + 1), "y": 3.0, "yhat": 3.0}
    )
    rows.loc[0, "y"] = 248.0
    blocks = ResidualBlocks.from_backtest(rows)
    means = np.full((1, H), 44.0)
    tot = joint_totals(means, np.zeros(1, dtype=np.int64), ["all"], ["S"], blocks, levels=[0.95])
    assert tot.quantiles.max() == pytest.approx(44.0 + 245.0)
