"""Daily demand of a block of synthetic SKUs, one random stream per block: a product of effects

    level x weekly profile x yearly season x trend x life cycle (launch ramp-up, fade-out)
          x holidays and events x (price / base price) ** elasticity x promotion uplift

drawn from a negative binomial (gamma-Poisson), then zeroed on stock-out days.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from training.synth.catalogue import Array, SkuParams, SynthConfig, rng_stream
from training.synth.pricing import (
    events_per_row,
    price_rows,
    promotion_rows,
    shelf_prices,
    sku_promotions,
    step_matrix,
    take_names,
)

BLOCK_SKUS = 512  # SKUs per random stream and per generated block


@dataclass
class Block:
    """The rows one block of SKUs adds to each entity."""

    sales: pd.DataFrame
    prices: pd.DataFrame
    promotions: pd.DataFrame


def simulate_block(
    cfg: SynthConfig,
    p: SkuParams,
    lo: int,
    hi: int,
    days: pd.DatetimeIndex,
    calendar: dict[tuple[int, str], Array],
    weekly: dict[str, Array],
    category_promos: dict[str, tuple[Array, Array, Array]],
) -> Block:
    """Prices, promotions and daily sales of SKUs lo..hi-1 (one random stream per block)."""
    rng = rng_stream(cfg.seed, 2, lo // BLOCK_SKUS)
    n, t_all, t_hist = hi - lo, len(days), cfg.n_days
    sl = slice(lo, hi)
    launch, stop = p.launch[sl], p.stop[sl]
    block_skus = pa.array(list(p.sku[sl]), type=pa.string())
    elasticity = p.elasticity[sl][:, None]

    price = shelf_prices(rng, p.base_price[sl], launch, stop, t_all, t_hist)
    promos = sku_promotions(
        rng, p.promo_rate[sl], p.category[sl], launch, stop, t_all, t_hist, category_promos
    )
    depth_m, disp_m, mail_m = promos.depth_by_day, promos.display_by_day, promos.mailer_by_day

    # demand
    h = slice(0, t_hist)
    tt = np.arange(t_hist)
    doy = days[h].day_of_year.to_numpy()
    dow = days[h].day_of_week.to_numpy()
    mu = np.empty((n, t_hist))
    for i in range(n):  # per-row lookups are cheap; the heavy work below is vectorised
        j = lo + i
        mu[i] = weekly[p.category[j]][dow] * calendar[(int(p.store[j]), p.category[j])][h]
    mu *= p.level[sl][:, None]
    mu *= np.exp(
        p.season_amp[sl][:, None]
        * np.cos(2 * np.pi * (doy[None, :] - p.season_peak[sl][:, None]) / 365.25)
    )
    mu *= np.exp(p.trend[sl][:, None] * (tt[None, :] - t_hist) / 365.0)
    age = tt[None, :] - launch[:, None]
    mu *= np.where(
        launch[:, None] > 0, 1.0 - np.exp(-np.maximum(age + 1, 0) / p.ramp[sl][:, None]), 1.0
    )
    to_stop = stop[:, None] - tt[None, :]
    mu *= np.where(stop[:, None] < t_hist, np.clip(0.4 + 0.6 * to_stop / 90.0, 0.4, 1.0), 1.0)
    mu *= (price[:, h] / p.base_price[sl][:, None]) ** elasticity
    mu *= (
        (1.0 - depth_m[:, h]) ** elasticity * (1 + 0.35 * disp_m[:, h]) * (1 + 0.25 * mail_m[:, h])
    )
    k = p.dispersion[sl][:, None]
    lam = mu * rng.gamma(k, 1.0 / k, size=mu.shape)
    units = rng.poisson(lam)

    # stock-outs: runs of days with nothing on the shelf (not for intermittent SKUs)
    so_rows = events_per_row(
        rng, n, np.where(p.intermittent[sl], 0.0, t_hist / cfg.stockout_every_days)
    )
    so_start = rng.integers(0, t_hist, len(so_rows))
    so_len = rng.integers(1, 7, len(so_rows))
    out = step_matrix(
        n,
        t_hist,
        np.concatenate([so_rows, so_rows]),
        np.concatenate([so_start, so_start + so_len]),
        np.concatenate([np.ones(len(so_rows)), -np.ones(len(so_rows))]),
    )
    in_stock = out < 0.5
    units = np.where(in_stock, units, 0)

    # long frames: sales only while the SKU is listed
    live = (tt[None, :] >= launch[:, None]) & (tt[None, :] < stop[:, None])
    r, c = np.nonzero(live)
    paid = price[:, h] * (1.0 - depth_m[:, h])
    u = units[r, c].astype(np.int64)
    ap = np.round(paid[r, c], 2)
    d0 = np.datetime64(days[0].date(), "D")
    sales = pd.DataFrame(
        {
            "sku": take_names(block_skus, r),
            "date": (d0 + c.astype("timedelta64[D]")).astype("datetime64[s]"),
            "units": u,
            "revenue": np.round(u * ap, 2),
            "avg_price": ap,
            "on_promotion": depth_m[:, h][r, c] > 0,
            "in_stock": in_stock[r, c],
        }
    )

    prices = price_rows(price, launch, stop, t_hist, block_skus, d0)
    promotions = promotion_rows(promos, p.sku[sl], p.category[sl], block_skus, d0)
    return Block(sales, prices, promotions)
