"""A chunk of source rows as validation takes it: entity column names, row numbers, and the
rows already refused while reading (undecodable bytes, malformed records).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from featurestore.validate import (
    UNDECODABLE,
    ColumnPlan,
    PlanError,
    Rows,
    empty_rejects,
    make_rejects,
)

Undecodable = dict[str, tuple[np.ndarray, list[str]]]  # column -> (mask, shown bad values)


@dataclass
class Chunk:
    frame: pd.DataFrame  # entity column names (and the source columns kept as extras)
    rows: Rows  # 1-based data row of each frame row
    rejects: pd.DataFrame  # rows refused while reading (malformed, undecodable)

    @property
    def size(self) -> int:
        return len(self.frame) + len(self.rejects)


def wanted(plan: ColumnPlan, extras: Sequence[str]) -> list[str]:
    """The source columns to read: those the plan maps, then the extras kept."""
    names = list(dict.fromkeys(plan.sources.values()))
    return names + [c for c in extras if c not in names]


def planned(raw: pd.DataFrame, plan: ColumnPlan, extras: Sequence[str]) -> pd.DataFrame:
    """Source columns renamed to the entity's (a source may feed several entity columns)."""
    absent = sorted({s for s in plan.sources.values() if s not in raw.columns})
    if absent:
        raise PlanError(f"column(s) {', '.join(absent)} missing from part of the source")
    data = {target: raw[source].reset_index(drop=True) for target, source in plan.sources.items()}
    for extra in extras:
        data[extra] = raw[extra].reset_index(drop=True)
    return pd.DataFrame(data, index=pd.RangeIndex(len(raw)))


def decode_columns(
    columns: Iterable[pa.Array | pa.ChunkedArray], names: list[str]
) -> tuple[list[pa.Array], Undecodable]:
    """Columns with invalid UTF-8 cells nulled, and per column where those cells were."""
    arrays: list[pa.Array] = []
    bad: Undecodable = {}
    for name, column in zip(names, columns, strict=True):
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        binary = pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)
        textual = pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
        if textual:
            try:
                arr.validate(full=True)
                arrays.append(arr)
                continue
            except pa.ArrowInvalid:
                pass
        if not (binary or textual):
            arrays.append(arr)
            continue
        raw = arr.view(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
        cells: list[str | None] = []
        mask = np.zeros(len(raw), dtype=bool)
        shown: list[str] = []
        for i, cell in enumerate(raw.to_pylist()):
            if cell is None:
                cells.append(None)
                continue
            try:
                cells.append(cell.decode("utf-8"))
            except UnicodeDecodeError:
                cells.append(None)
                mask[i] = True
                shown.append(cell.decode("utf-8", errors="backslashreplace"))
        arrays.append(pa.array(cells, type=pa.string()))
        if mask.any():
            bad[name] = (mask, shown)
    return arrays, bad


def split_undecodable(
    table: pa.Table, rows: Rows, bad: Undecodable, plan: ColumnPlan, extras: Sequence[str]
) -> Chunk:
    """The chunk of a decoded table: rows with undecodable cells become rejects."""
    raw = table.to_pandas(date_as_object=False)
    refused = np.zeros(len(raw), dtype=bool)
    parts = []
    for name, (mask, shown) in bad.items():
        hit = mask & ~refused
        values = np.asarray(shown, dtype=object)[hit[mask]]
        refused |= hit
        column = next((t for t, s in plan.sources.items() if s == name), name)
        parts.append(make_rejects(rows[hit], UNDECODABLE, column, values))
    rejects = empty_rejects()
    if parts:
        rejects = pd.concat(parts, ignore_index=True).sort_values("row", kind="stable")
    keep = ~refused
    return Chunk(planned(raw.loc[keep], plan, extras), rows[keep], rejects)
