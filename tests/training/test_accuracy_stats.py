"""history_stats gives, for many origins in one pass, what naive_scale and demand_class give for
each origin's history on its own."""

from __future__ import annotations

import numpy as np

from training.accuracy import history_stats
from training.metrics import demand_class, naive_scale


def test_history_stats_equal_the_metrics_at_every_origin() -> None:
    rng = np.random.default_rng(7)
    units = rng.poisson(0.8, size=(9, 120)).astype(np.float64)
    units[0, :50] = np.nan  # launched late
    units[1, :] = 0.0  # never sold
    units[2, :70] = 0.0  # first sale late
    units[3, 40:45] = np.nan  # days not observed
    units[4] = rng.poisson(20, size=120)  # smooth
    cols = [5, 30, 49, 60, 71, 119]
    stats = history_stats(units, cols)
    for c in cols:
        scale, classes = stats[c]
        np.testing.assert_allclose(scale, naive_scale(units[:, : c + 1]), equal_nan=True)
        assert classes.tolist() == demand_class(units[:, : c + 1]).tolist()
