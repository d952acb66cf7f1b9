"""The whole catalogue's latest window in memory: what serving slices instead of a SQL read.

``CatalogueWindow.frame(skus, horizon)`` gives exactly what ``readers.latest_window`` returns
for those SKUs (a test holds the two equal), for any horizon up to the one it was read with:
each SKU's rows are its own consecutive days and no kept value depends on the other SKUs or on
how many future days were read. The owner drops it when the store's data token changes.
It holds ``ROW_BYTES`` per SKU-day (the history dtypes plus a day number) and a string per SKU.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Engine

from featurestore.readers import EventRows, latest_window
from featurestore.schema import HISTORY_FLAGS, HISTORY_VALUES

__all__ = ["ROW_BYTES", "CatalogueWindow"]

# The frame's own dtypes per value column: a slice is a copy, never a conversion.
_COLUMNS: dict[str, np.dtype[Any]] = {
    c: np.dtype(t) for c, t in {**HISTORY_VALUES, **HISTORY_FLAGS}.items()
}
_DAY = np.int32
ROW_BYTES = sum(np.dtype(t).itemsize for t in _COLUMNS.values()) + np.dtype(_DAY).itemsize
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class CatalogueWindow:
    """Every SKU's last ``n_days`` up to ``as_of`` plus ``horizon`` future rows, in memory."""

    as_of: date
    n_days: int
    horizon: int
    position: dict[str, int]  # sku -> index into names / bounds
    names: npt.NDArray[np.object_]  # SKUs in reader (sorted) order
    bounds: npt.NDArray[np.int64]  # rows of SKU i are bounds[i]:bounds[i + 1]
    first: npt.NDArray[np.int64]  # first day number of each SKU's rows
    day: npt.NDArray[np.int32]  # day number (since 1970-01-01) per row
    columns_: dict[str, np.ndarray]  # per row, in the frame's dtypes

    @classmethod
    def read(
        cls,
        engine: Engine,
        n_days: int,
        horizon: int,
        as_of: date,
        events: EventRows | None = None,
    ) -> CatalogueWindow:
        """Read every SKU's window through ``latest_window`` (one read for the catalogue)."""
        frame = latest_window(engine, None, n_days, horizon=horizon, as_of=as_of, events=events)
        return cls.of(frame, n_days=n_days, horizon=horizon, as_of=as_of)

    @classmethod
    def of(cls, frame: pd.DataFrame, *, n_days: int, horizon: int, as_of: date) -> CatalogueWindow:
        """Keep a reader's frame (rows grouped by SKU, consecutive days) as compact arrays."""
        sku = frame["sku"].to_numpy(dtype=object)
        day = frame["date"].to_numpy().astype("datetime64[D]").astype(np.int64)
        n = len(sku)
        change = np.ones(n, dtype=bool)
        if n:
            np.not_equal(sku[1:], sku[:-1], out=change[1:])
        starts = np.flatnonzero(change)
        names = sku[starts]
        bounds = np.append(starts, n).astype(np.int64)
        first = day[starts]
        if len(set(names.tolist())) != len(names) or (
            n and not np.array_equal(day - np.repeat(first, np.diff(bounds)), _offsets(bounds))
        ):
            raise ValueError("a window needs each SKU's rows together, on consecutive days")
        return cls(
            as_of=as_of,
            n_days=n_days,
            horizon=horizon,
            position={s: i for i, s in enumerate(names.tolist())},
            names=names,
            bounds=bounds,
            first=first,
            day=day.astype(_DAY),
            columns_={c: frame[c].to_numpy(dtype=t) for c, t in _COLUMNS.items()},
        )

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (the SKU strings and the dict come on top)."""
        arrays = [self.names, self.bounds, self.first, self.day, *self.columns_.values()]
        return sum(a.nbytes for a in arrays)

    def frame(self, skus: list[str], horizon: int) -> pd.DataFrame:
        """``latest_window`` of these SKUs and horizon (<= the window's), as the reader gives it.

        SKUs without rows (no sales or launch date up to ``as_of``, or not in the catalogue when
        read) are absent, as from the reader.
        """
        data: dict[str, Any] = self.columns(skus, horizon)
        data["sku"] = pd.Series(data["sku"], dtype=object)
        return pd.DataFrame(data)

    def columns(self, skus: list[str], horizon: int) -> dict[str, np.ndarray]:
        """The columns of ``frame(skus, horizon)`` as numpy arrays, without building the frame:
        ``sku`` (object), ``date`` (datetime64[ns]) and the rest in the frame's dtypes."""
        if horizon > self.horizon or horizon < 0:
            raise ValueError(f"horizon {horizon} is outside the window's 0..{self.horizon}")
        found = sorted({self.position[s] for s in skus if s in self.position})
        idx = np.asarray(found, dtype=np.int64)
        a = self.bounds[idx]
        last = (self.as_of + timedelta(days=horizon) - _EPOCH).days
        b = np.minimum(self.bounds[idx + 1], a + np.maximum(last - self.first[idx] + 1, 0))
        length = b - a
        rows = np.repeat(a - np.cumsum(length) + length, length) + np.arange(int(length.sum()))
        data = {
            "sku": np.repeat(self.names[idx], length),
            "date": self.day[rows].astype("datetime64[D]").astype("datetime64[ns]"),
        }
        for c, values in self.columns_.items():
            data[c] = values[rows]
        return data


def _offsets(bounds: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """0, 1, .., len-1 within each segment."""
    length = np.diff(bounds)
    return np.arange(int(bounds[-1])) - np.repeat(bounds[:-1], length)
