"""Synthetic order lines (the "orders" entity) in chronological chunks, for ingestion tests and
benchmarks of the order-line path."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from training.synth.catalogue import rng_stream


def iter_order_lines(
    n_lines: int,
    *,
    seed: int,
    skus: Sequence[str],
    start: dt.date,
    end: dt.date,
    chunk_rows: int = 500_000,
    first_order: int = 1,
    customer_ids: bool = False,
) -> Iterator[pd.DataFrame]:
    """Synthetic order lines ("orders" entity columns) in chronological chunks.

    Orders are numbered from ``first_order``: files generated for consecutive periods with
    disjoint numbers hold distinct order lines (a store that appends them keeps every line).

    About 93% of orders are completed, 4% cancelled and 1% are return orders whose lines carry
    negative quantities; 3% of completed lines are returned (status "returned", quantity > 0).

    ``customer_ids`` adds a customer_id column: loading it then needs SALESFC_CUSTOMER_ID_KEY
    like a real export, so it is off by default (forecasting never reads customers).
    """
    if not skus:
        raise ValueError("skus must not be empty")
    sku_arr = np.asarray(list(skus), dtype=object)
    base = rng_stream(seed, 10)
    n_skus = len(sku_arr)
    popularity = 1.0 / (base.permutation(n_skus) + 5.0) ** 0.9
    popularity /= popularity.sum()
    sku_price = np.round(np.exp(base.normal(np.log(6.0), 0.7, n_skus)), 2)
    t0 = pd.Timestamp(start, tz="UTC").value // 1000  # microseconds
    t1 = (pd.Timestamp(end, tz="UTC") + pd.Timedelta(days=1)).value // 1000
    n_chunks = max(math.ceil(n_lines / chunk_rows), 1)
    next_order = first_order
    for c in range(n_chunks):
        m = min(chunk_rows, n_lines - c * chunk_rows)
        if m <= 0:
            break
        rng = rng_stream(seed, 11, c)
        sizes = 1 + rng.poisson(1.5, m // 2 + 16)
        ends = np.cumsum(sizes)
        k = int(np.searchsorted(ends, m)) + 1
        sizes = sizes[:k]
        sizes[-1] -= ends[k - 1] - m
        order_no = next_order + np.arange(k)
        next_order += k
        order_of = np.repeat(np.arange(k), sizes)
        line = np.arange(m) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
        lo_t = t0 + (t1 - t0) * c // n_chunks
        hi_t = t0 + (t1 - t0) * (c + 1) // n_chunks
        at = np.sort(rng.integers(lo_t, hi_t, k))
        kind = rng.choice(3, size=k, p=[0.95, 0.04, 0.01])  # 0 sale, 1 cancelled, 2 return order
        qty = (1 + rng.poisson(0.4, m)).astype(np.float64)
        status = np.full(m, "completed", dtype=object)
        status[kind[order_of] == 1] = "cancelled"
        returned_line = (kind[order_of] == 0) & (rng.random(m) < 0.03)
        status[returned_line] = "returned"
        is_return = kind[order_of] == 2
        status[is_return] = "returned"
        qty[is_return] *= -1
        sku_idx = rng.choice(n_skus, size=m, p=popularity)
        discount = np.where(rng.random(m) < 0.15, rng.choice([0.05, 0.1, 0.2, 0.3], m), 0.0)
        prefix = np.where(kind == 2, "RT", "SO")
        order_ids = pd.Series(order_no).astype("str").str.zfill(10)
        order_ids = pd.Series(prefix, dtype="str") + order_ids
        customers = pd.Series(rng.integers(1, 250_000, k)).astype("str")
        frame = pd.DataFrame(
            {
                "order_id": order_ids.to_numpy()[order_of],
                "line": line.astype(np.int64),
                "sku": pd.array(sku_arr[sku_idx], dtype="str"),
                "customer_id": ("C" + customers).to_numpy()[order_of],
                "ordered_at": pd.to_datetime(at[order_of], unit="us", utc=True),
                "quantity": qty,
                "unit_price": sku_price[sku_idx],
                "discount": discount,
                "status": pd.array(status, dtype="str"),
            }
        )
        # Drawn either way, so the other columns are the same with and without customers.
        yield frame if customer_ids else frame.drop(columns="customer_id")
