"""The dense (SKU x day) grid of a history read and the columns joined onto it in numpy: prices
as of each day (listed, else the last average selling price) and promotions expanded to days."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Connection

from featurestore.read_statements import (
    LATEST_AVG_PRICE,
    PRICES,
    PRODUCTS,
    PROMOTIONS_BY,
    day_number,
    fetch,
    from_day_number,
    row_columns,
    sku_chunks,
)

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOL = npt.NDArray[np.bool_]

DISCONTINUED = "discontinued"
_NONE_HI = np.int64(1 << 40)  # "unknown" in a min(); far beyond any real day number
_KEY_SHIFT = np.int64(1 << 31)  # keeps (day + shift) positive inside a combined sku/day key
_KEY_STRIDE = np.int64(1 << 33)


@dataclass
class HistoryGrid:
    """The dense (sku, day) grid: one segment of consecutive days per SKU, in sku order."""

    skus: list[str]
    categories: list[str | None]
    regions: list[str | None]
    first: I64  # first day per SKU
    last: I64  # last day per SKU (inclusive)
    offset: I64  # row where the SKU's segment starts
    sku_idx: I64  # per row
    day: I64  # per row

    @property
    def rows(self) -> int:
        return len(self.day)

    def positions(self, idx: I64, day: I64) -> tuple[I64, BOOL]:
        """Row positions of (sku index, day) pairs and which of them fall inside the grid."""
        safe = np.where(idx >= 0, idx, 0)
        rel = day - self.first[safe]
        inside = (idx >= 0) & (rel >= 0) & (day <= self.last[safe])
        return self.offset[safe] + rel, inside


def build_grid(
    conn: Connection, wanted: list[str] | None, start: date | None, end: date, as_of: date
) -> HistoryGrid | None:
    prows = fetch(conn, PRODUCTS, sku_chunks(wanted), as_of=as_of)
    if not prows:
        return None
    prows.sort(key=lambda r: r[0])
    names = [r[0] for r in prows]
    _, _, _, launch_t, stop_t, status, first_t, last_t = row_columns(prows, 8)

    def days(values: tuple[Any, ...]) -> I64:
        return np.array([_NONE_HI if v is None else v for v in values], dtype=np.int64)

    # first/last sale are the ones known at as_of: later sales rows were never read.
    launch, stop, first_sale, last_sale = days(launch_t), days(stop_t), days(first_t), days(last_t)
    discontinued = np.array([s == DISCONTINUED for s in status], dtype=bool)
    first = np.minimum(launch, first_sale)
    if start is not None:
        first = np.maximum(first, day_number(start))
    last = np.full(len(names), day_number(end), dtype=np.int64)
    stop = np.where(stop == _NONE_HI, last_sale, stop)
    last = np.where(discontinued, np.minimum(last, stop), last)
    unknown = (first >= _NONE_HI) | (discontinued & (stop >= _NONE_HI))
    length = np.where(unknown, 0, np.clip(last - first + 1, 0, None))
    keep = length > 0
    if not keep.any():
        return None
    kept = np.flatnonzero(keep)
    first, last, length = first[kept], last[kept], length[kept]
    offset = np.concatenate(([0], np.cumsum(length)[:-1])).astype(np.int64)
    sku_idx = np.repeat(np.arange(len(kept), dtype=np.int64), length)
    day = first[sku_idx] + (np.arange(len(sku_idx), dtype=np.int64) - offset[sku_idx])
    return HistoryGrid(
        skus=[names[i] for i in kept],
        categories=[prows[i][1] for i in kept],
        regions=[prows[i][2] for i in kept],
        first=first,
        last=last,
        offset=offset,
        sku_idx=sku_idx,
        day=day,
    )


def as_of_join(src_idx: I64, src_day: I64, src_val: F64, idx: I64, day: I64) -> F64:
    """For each (idx, day), the value of the latest source row of that SKU dated on or before."""
    out = np.full(len(idx), np.nan)
    if len(src_idx) == 0 or len(idx) == 0:
        return out
    src_key = src_idx * _KEY_STRIDE + (src_day + _KEY_SHIFT)
    order = np.argsort(src_key, kind="stable")
    src_key, src_idx, src_val = src_key[order], src_idx[order], src_val[order]
    # The queries a piece at a time: their int64 temporaries would be ~4 x 8 bytes a grid row
    # at once (1.7 GB at M5 scale).
    for a in range(0, len(idx), JOIN_PIECE):
        q_idx, q_day = idx[a : a + JOIN_PIECE], day[a : a + JOIN_PIECE]
        at = np.searchsorted(src_key, q_idx * _KEY_STRIDE + (q_day + _KEY_SHIFT), side="right") - 1
        safe = np.maximum(at, 0)
        hit = (at >= 0) & (src_idx[safe] == q_idx)
        out[a : a + JOIN_PIECE][hit] = src_val[safe[hit]]
    return out


JOIN_PIECE = 4_000_000


def lookup_positions(index: pd.Index, values: Sequence[Any]) -> I64:
    """Positions of values in index (-1 where absent)."""
    return np.asarray(index.get_indexer(pd.Index(list(values), dtype=object)), dtype=np.int64)


def grid_prices(
    conn: Connection, grid: HistoryGrid, index: pd.Index, chunks: list[list[str] | None], hi: int
) -> F64:
    rows = fetch(conn, PRICES, chunks, hi=from_day_number(hi))
    p_sku, p_day, p_val = row_columns(rows, 3)
    idx = lookup_positions(index, p_sku)
    val = np.asarray(p_val, dtype=np.float64)
    ok = (idx >= 0) & ~np.isnan(val)
    return as_of_join(
        idx[ok], np.asarray(p_day, dtype=np.int64)[ok], val[ok], grid.sku_idx, grid.day
    )


def avg_price_seed(
    conn: Connection, grid: HistoryGrid, index: pd.Index, price: F64, start: date, as_of: int
) -> tuple[I64, F64]:
    """The last known avg_price before `start` for SKUs whose first row has no listed price."""
    start_day = day_number(start)
    cut = np.isnan(price[grid.offset]) & (grid.first == start_day)
    if not cut.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    limit = from_day_number(min(start_day - 1, as_of))
    rows: list[Any] = []
    for chunk in sku_chunks([grid.skus[i] for i in np.flatnonzero(cut)]):
        rows.extend(conn.execute(LATEST_AVG_PRICE, {"skus": chunk, "limit": limit}).all())
    s_sku, s_val = row_columns(rows, 2)
    return (
        lookup_positions(index, s_sku),
        np.asarray(s_val, dtype=np.float64),
    )


def grid_promotions(
    conn: Connection,
    grid: HistoryGrid,
    index: pd.Index,
    chunks: list[list[str] | None],
    lo: int,
    hi: int,
) -> tuple[BOOL, F64, BOOL, BOOL]:
    n = grid.rows
    covered = np.zeros(n, dtype=bool)
    depth = np.zeros(n, dtype=np.float64)
    display = np.zeros(n, dtype=bool)
    mailer = np.zeros(n, dtype=bool)
    categories = sorted({c for c in grid.categories if c is not None})
    params: dict[str, Any] = {"lo": from_day_number(lo), "hi": from_day_number(hi)}
    rows: list[Any] = []
    for i, chunk in enumerate(chunks):
        with_categories = i == 0 and bool(categories)  # category rows once, not per chunk
        stmt = PROMOTIONS_BY[chunk is None, with_categories]
        if chunk is not None:
            params["skus"] = chunk
        if with_categories:
            params["categories"] = categories
        rows.extend(conn.execute(stmt, params).all())
    if not rows:
        return covered, depth, display, mailer

    p_sku, p_cat, p_start, p_end, p_depth, p_display, p_mailer = row_columns(rows, 7)
    sku_of = lookup_positions(index, p_sku)
    sku_level = np.array([s is not None for s in p_sku], dtype=bool)
    direct = np.flatnonzero(sku_level & (sku_of >= 0))
    # Category promotions apply to every SKU of the category: join promotion rows to SKUs
    # (a dict of the grid's categories: a pandas merge cost more than the whole query).
    skus_of: dict[str, list[int]] = {}
    for i, category in enumerate(grid.categories):
        if category is not None:
            skus_of.setdefault(category, []).append(i)
    cat_row: list[int] = []
    cat_idx: list[int] = []
    for r in np.flatnonzero(~sku_level).tolist():
        members = skus_of.get(p_cat[r], [])
        cat_row.extend([r] * len(members))
        cat_idx.extend(members)
    row = np.concatenate((direct, np.asarray(cat_row, dtype=np.int64)))
    idx = np.concatenate((sku_of[direct], np.asarray(cat_idx, dtype=np.int64)))
    if len(row) == 0:
        return covered, depth, display, mailer

    first = np.maximum(np.asarray(p_start, dtype=np.int64)[row], grid.first[idx])
    last = np.minimum(np.asarray(p_end, dtype=np.int64)[row], grid.last[idx])
    span = np.clip(last - first + 1, 0, None)
    if span.sum() == 0:
        return covered, depth, display, mailer
    begin = grid.offset[idx] + (first - grid.first[idx])
    # Expand every clipped interval into its row positions without a Python loop.
    ends = np.cumsum(span)
    pos = np.repeat(begin - (ends - span), span) + np.arange(int(ends[-1]), dtype=np.int64)
    covered[pos] = True
    pair_depth = np.nan_to_num(np.asarray(p_depth, dtype=np.float64))[row]
    np.maximum.at(depth, pos, np.repeat(pair_depth, span))
    display[pos[np.repeat(np.asarray(p_display, dtype=bool)[row], span)]] = True
    mailer[pos[np.repeat(np.asarray(p_mailer, dtype=bool)[row], span)]] = True
    return covered, depth, display, mailer
