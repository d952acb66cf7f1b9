"""Calendar events per history row: holidays, events and SNAP days in the SKU's region and the
capped distances to the next and the last event; ``EventRows`` caches the table between loads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine

from featurestore.history_grid import BOOL, I64, HistoryGrid
from featurestore.read_statements import ALL_EVENTS, EVENTS, from_day_number, row_columns

EVENT_CAP = 365
HOLIDAY_KINDS = ("holiday", "national")
SNAP_KIND = "snap"
# A day the shop (the region's stores) is closed: forecast 0, never a training target.
CLOSED_KIND = "closed"


@dataclass(frozen=True)
class EventRows:
    """Every calendar event (day number, kind, region): a reader's cache between ingestions.

    Readers given these skip their events query; the features are the same, because events
    beyond the capped distances change nothing and the region filter is applied in numpy.
    """

    day: I64
    kind: npt.NDArray[np.object_]  # stripped, lower case
    region: npt.NDArray[np.object_]

    @classmethod
    def of(cls, rows: Sequence[Any]) -> EventRows:
        day, kind, region = row_columns(rows, 3)
        return cls(
            np.asarray(day, dtype=np.int64),
            np.asarray([(k or "").strip().lower() for k in kind], dtype=object),
            np.asarray(region, dtype=object),
        )


def read_events(engine: Engine) -> EventRows:
    """All calendar events, for readers to reuse until the next ingestion."""
    with engine.connect() as conn:
        return EventRows.of(conn.execute(ALL_EVENTS).all())


def _region_set(region: str | None) -> tuple[str, ...]:
    code = (region or "").strip().upper()
    if not code:
        return ("",)
    country = code.split("-", 1)[0]
    return ("", country) if country == code else ("", country, code)


def grid_events(
    conn: Connection, grid: HistoryGrid, lo: int, hi: int, cached: EventRows | None = None
) -> tuple[BOOL, BOOL, BOOL, np.ndarray, np.ndarray, BOOL]:
    region_sets = sorted({_region_set(r) for r in grid.regions})
    codes = sorted({code for rs in region_sets for code in rs})
    if cached is None:
        # Events more than EVENT_CAP days outside the frame cannot change a capped distance, so
        # reading this window gives the same values as reading the whole table.
        params = {
            "lo": from_day_number(lo - EVENT_CAP - 1),
            "hi": from_day_number(hi + EVENT_CAP + 1),
            "regions": codes,
        }
        cached = EventRows.of(conn.execute(EVENTS, params).all())
    # With every event (a cache): the ones of other regions match no region set below, and the
    # ones beyond the window cannot change a capped distance (see above).
    e_day, kinds, e_region = cached.day, cached.kind, cached.region
    e_snap = kinds == SNAP_KIND
    e_holiday = np.isin(kinds, HOLIDAY_KINDS)
    e_closed = kinds == CLOSED_KIND

    days = np.arange(lo, hi + 1, dtype=np.int64)
    width = len(days)
    holiday = np.zeros((len(region_sets), width), dtype=bool)
    event = np.zeros_like(holiday)
    snap = np.zeros_like(holiday)
    closed = np.zeros_like(holiday)
    to_event = np.full((len(region_sets), width), EVENT_CAP, dtype=np.int64)
    since_event = np.full_like(to_event, EVENT_CAP)
    for g, regions in enumerate(region_sets):  # a handful of regions, not rows
        mine = np.isin(e_region, regions)
        inside = mine & (e_day >= lo) & (e_day <= hi)
        holiday[g, e_day[inside & e_holiday] - lo] = True
        event[g, e_day[inside & ~e_snap] - lo] = True
        snap[g, e_day[inside & e_snap] - lo] = True
        closed[g, e_day[inside & e_closed] - lo] = True
        marks = np.unique(e_day[mine & ~e_snap])
        if len(marks):
            nxt = np.searchsorted(marks, days, side="left")
            has = nxt < len(marks)
            to_event[g, has] = marks[nxt[has]] - days[has]
            prv = np.searchsorted(marks, days, side="right") - 1
            has = prv >= 0
            since_event[g, has] = days[has] - marks[prv[has]]
    np.minimum(to_event, EVENT_CAP, out=to_event)
    np.minimum(since_event, EVENT_CAP, out=since_event)

    group_of = {rs: g for g, rs in enumerate(region_sets)}
    sku_group = np.array([group_of[_region_set(r)] for r in grid.regions], dtype=np.int64)
    row_group = sku_group[grid.sku_idx]
    col = grid.day - lo
    # Distances are capped at EVENT_CAP: int16 per row (the history's dtype), not int64 (two
    # 8-byte columns per row were 0.9 GB at the read's peak at M5 scale).
    return (
        holiday[row_group, col],
        event[row_group, col],
        snap[row_group, col],
        to_event.astype(np.int16)[row_group, col],
        since_event.astype(np.int16)[row_group, col],
        closed[row_group, col],
    )
