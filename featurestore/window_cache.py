"""The whole catalogue's latest window in memory: what serving slices instead of a SQL read.

``CatalogueWindow.read`` is ``readers.latest_window`` for every SKU at once (same point-in-time
reader, same ``as_of``), kept as compact numpy columns grouped by SKU. ``frame(skus, horizon)``
gives exactly the frame ``latest_window(engine, skus, n_days, horizon, as_of, events)`` returns
for those SKUs (a test holds the two equal), for any horizon up to the one it was read with:

* each SKU's rows are the same consecutive days (its grid starts at the same day whatever the
  other SKUs; a shorter horizon only cuts the future rows off its end);
* prices are as-of joins of rows dated on or before each row's day, promotions are clipped to
  each SKU's rows and events come from the same cached ``EventRows``, so no value of a kept row
  depends on which other SKUs or how many future days were read.

The window is only as fresh as the ``as_of`` (and the data) it was read at: the owner must drop
it when the store's data token changes (``app.services.forecasting`` keeps it beside the token).

Memory: ``ROW_BYTES`` (26) bytes per SKU-day, i.e. ``(n_days + horizon) * 26`` bytes per SKU
(about 11 KB for the default champion's ~400 days + 28), plus one Python string per SKU.
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

__all__ = ["ROW_BYTES", "CatalogueWindow"]

# Compact dtypes per column (the frame's own dtypes: a slice is a copy, never a conversion).
_COLUMNS: dict[str, Any] = {
    "units": np.float32,
    "price": np.float32,
    "on_promotion": np.int8,
    "promo_depth": np.float32,
    "promo_display": np.int8,
    "promo_mailer": np.int8,
    "is_holiday": np.int8,
    "is_event": np.int8,
    "is_snap": np.int8,
    "days_to_event": np.int16,
    "days_since_event": np.int16,
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
