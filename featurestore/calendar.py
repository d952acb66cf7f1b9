"""Public holidays for the catalogue's regions, from the `holidays` package, into calendar_events.

Custom events (sports finals, paydays, SNAP days) arrive through ingestion; this module only
adds the public holidays every region has anyway, so a store needs no holiday file of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

import holidays
import pandas as pd
from sqlalchemy import Connection, Engine, String, delete, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from featurestore.tables import CalendarEvent, DailySales, Product

__all__ = ["HOLIDAY_KIND", "HOLIDAY_SOURCE", "holiday_events", "sync_holidays"]

log = logging.getLogger(__name__)

HOLIDAY_KIND = "holiday"
HOLIDAY_SOURCE = "holidays"
_NAME_TYPE = CalendarEvent.__table__.c.name.type
_NAME_LEN = (_NAME_TYPE.length if isinstance(_NAME_TYPE, String) else None) or 128


def _country_holidays(country: str, subdiv: str | None, years: range) -> Any | None:
    try:
        return holidays.country_holidays(country, subdiv=subdiv, years=years)
    except NotImplementedError as exc:  # unknown country or subdivision
        log.warning("no public holidays for %s%s: %s", country, f"-{subdiv}" if subdiv else "", exc)
        return None


def holiday_events(regions: Iterable[str], start: date, end: date) -> pd.DataFrame:
    """Public holidays between start and end (inclusive) for ISO regions ('US', 'US-CA', 'DE-BY').

    Columns: date (datetime64[ns]), name, kind ('holiday'), region. Holidays of the whole
    country carry the country code as region; those only the subdivision keeps carry the
    subdivision code. Regions the package does not know are skipped with a logged warning.
    """
    years = range(start.year, end.year + 1)
    found: set[tuple[date, str, str]] = set()
    codes = sorted({r.strip().upper() for r in regions if r and r.strip()})
    for code in codes:
        country, _, subdiv = code.partition("-")
        national = _country_holidays(country, None, years)
        if national is None:
            continue
        for day in national:
            found.update((day, name, country) for name in national.get_list(day))
        if subdiv:
            local = _country_holidays(country, subdiv, years)
            if local is None:
                continue
            for day in local:
                own = set(local.get_list(day)) - set(national.get_list(day))
                found.update((day, name, code) for name in own)
    rows = sorted(
        (day, name[:_NAME_LEN], region) for day, name, region in found if start <= day <= end
    )
    return pd.DataFrame(
        {
            "date": pd.Series([r[0] for r in rows], dtype="datetime64[ns]"),
            "name": pd.Series([r[1] for r in rows], dtype=object),
            "kind": pd.Series([HOLIDAY_KIND] * len(rows), dtype=object),
            "region": pd.Series([r[2] for r in rows], dtype=object),
        }
    )


def _insert_new(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert rows whose (date, name, region) is not there yet; return how many were new."""
    if conn.dialect.name == "postgresql":
        stmt: Any = postgresql.insert(CalendarEvent)
    elif conn.dialect.name == "sqlite":
        stmt = sqlite.insert(CalendarEvent)
    else:  # pragma: no cover - the store runs on SQLite or PostgreSQL
        raise NotImplementedError(f"no upsert for dialect {conn.dialect.name}")
    # An existing row with the same key wins: it may be a custom event someone curated.
    stmt = stmt.on_conflict_do_nothing(index_elements=["date", "name", "region"])
    before = conn.execute(select(func.count()).select_from(CalendarEvent)).scalar_one()
    conn.execute(stmt, rows)
    after = conn.execute(select(func.count()).select_from(CalendarEvent)).scalar_one()
    return int(after - before)


def sync_holidays(engine: Engine, start: date | None = None, end: date | None = None) -> int:
    """Upsert public holidays for every products.region over the sales range (+1 year); rows new."""
    with engine.begin() as conn:
        regions = [
            r
            for r in conn.execute(select(Product.region).distinct()).scalars()
            if r is not None and r.strip()
        ]
        first, last = conn.execute(
            select(func.min(DailySales.date), func.max(DailySales.date))
        ).one()
        today = date.today()
        start = start or first or today
        if end is None:
            end = (last or today) + timedelta(days=366)
        if not regions or start > end:
            return 0
        frame = holiday_events(regions, start, end)
        removed = _remove_withdrawn(conn, frame, regions, start, end)
        if frame.empty:
            return 0
        rows = [
            {
                "date": day.date(),
                "name": name,
                "kind": kind,
                "region": region,
                "source": HOLIDAY_SOURCE,
            }
            for day, name, kind, region in frame.itertuples(index=False, name=None)
        ]
        written = _insert_new(conn, rows)
    log.info(
        "synced public holidays for %s: %d new rows, %d withdrawn",
        ", ".join(sorted(regions)),
        written,
        removed,
    )
    return written


def _remove_withdrawn(
    conn: Connection, frame: pd.DataFrame, regions: list[str], start: date, end: date
) -> int:
    """Delete synced holidays in [start, end] that the package no longer lists; return how many.

    A `holidays` release can move, rename or drop a holiday; a re-sync then withdraws the rows
    it wrote before (source 'holidays' only: curated and ingested events are never touched), for
    the synced regions and their countries.
    """
    codes = {r.strip().upper() for r in regions}
    codes |= {c.partition("-")[0] for c in codes}
    current = {
        (day.date(), name, region)
        for day, name, region in frame[["date", "name", "region"]].itertuples(index=False)
    }
    synced = conn.execute(
        select(CalendarEvent.date, CalendarEvent.name, CalendarEvent.region).where(
            CalendarEvent.source == HOLIDAY_SOURCE,
            CalendarEvent.date.between(start, end),
            CalendarEvent.region.in_(sorted(codes)),
        )
    ).all()
    stale = [tuple(row) for row in synced if tuple(row) not in current]
    for at in range(0, len(stale), 500):
        key = tuple_(CalendarEvent.date, CalendarEvent.name, CalendarEvent.region)
        conn.execute(
            delete(CalendarEvent).where(
                CalendarEvent.source == HOLIDAY_SOURCE, key.in_(stale[at : at + 500])
            )
        )
    return len(stale)
