"""Public holidays from the `holidays` package into calendar_events."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from sqlalchemy import Engine, func, insert, select

from featurestore.calendar import holiday_events, sync_holidays
from featurestore.readers import read_frame
from featurestore.tables import CalendarEvent, DailySales, Product


def _pairs(frame: pd.DataFrame) -> set[tuple[date, str, str]]:
    return {
        (t.date(), n, r)
        for t, n, r in zip(frame["date"], frame["name"], frame["region"], strict=True)
    }


def test_holiday_events_split_country_and_subdivision_holidays() -> None:
    frame = holiday_events(["US-CA", "US-TX", " us ", ""], date(2015, 1, 1), date(2015, 12, 31))

    assert list(frame.columns) == ["date", "name", "kind", "region"]
    assert str(frame["date"].dtype) == "datetime64[ns]"
    assert set(frame["kind"]) == {"holiday"}
    pairs = _pairs(frame)
    assert (date(2015, 12, 25), "Christmas Day", "US") in pairs
    assert (date(2015, 3, 31), "Cesar Chavez Day", "US-CA") in pairs
    assert (date(2015, 1, 19), "Confederate Memorial Day", "US-TX") in pairs
    assert not any(n == "Confederate Memorial Day" and r != "US-TX" for _, n, r in pairs)
    assert not any(n == "Christmas Day" and r != "US" for _, n, r in pairs)
    assert len(pairs) == len(frame)  # the country's holidays once, not once per state
    assert frame["date"].between(pd.Timestamp(2015, 1, 1), pd.Timestamp(2015, 12, 31)).all()


def test_holiday_events_clip_to_the_range_and_skip_unknown_regions() -> None:
    frame = holiday_events(["DE-BY", "XX", "US-ZZ"], date(2016, 12, 20), date(2017, 1, 10))

    # US-ZZ is no US subdivision: it still gets the country's holidays, XX gets nothing.
    assert set(frame["region"]) == {"DE", "DE-BY", "US"}
    pairs = _pairs(frame)
    assert (date(2016, 12, 26), "Second Day of Christmas", "DE") in pairs
    assert (date(2017, 1, 6), "Epiphany", "DE-BY") in pairs
    assert (date(2017, 1, 2), "New Year's Day (observed)", "US") in pairs
    assert frame["date"].min() >= pd.Timestamp(2016, 12, 20)
    assert frame["date"].max() <= pd.Timestamp(2017, 1, 10)
    assert holiday_events([], date(2016, 1, 1), date(2016, 12, 31)).empty


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(CalendarEvent)).scalar_one())


def test_sync_holidays_is_idempotent_and_feeds_the_reader(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(Product),
            [
                {"sku": "A", "region": "US-CA", "launch_date": date(2015, 12, 20)},
                {"sku": "B", "region": None, "launch_date": None},
            ],
        )
        conn.execute(
            insert(DailySales),
            [{"sku": "A", "date": date(2015, 12, 31), "units": 1.0, "source": "direct"}],
        )
        # A curated row with a holiday's key stays as it was.
        conn.execute(
            insert(CalendarEvent),
            [{"date": date(2015, 11, 26), "name": "Thanksgiving Day", "kind": "cultural",
              "region": "US"}],
        )  # fmt: skip

    written = sync_holidays(engine, start=date(2015, 1, 1))

    assert written > 10
    assert _count(engine) == written + 1
    assert sync_holidays(engine, start=date(2015, 1, 1)) == 0
    assert _count(engine) == written + 1
    with engine.connect() as conn:
        rows = conn.execute(
            select(CalendarEvent.date, CalendarEvent.region, CalendarEvent.source)
        ).all()
        kept = (
            conn.execute(select(CalendarEvent.kind).where(CalendarEvent.date == date(2015, 11, 26)))
            .scalars()
            .all()
        )
    assert kept == ["cultural"]
    assert {r.source for r in rows} == {"holidays", "custom"}
    assert {r.region for r in rows} == {"US", "US-CA"}
    # Default end: a year past the last sale.
    assert max(r.date for r in rows) > date(2016, 11, 1)
    assert min(r.date for r in rows) >= date(2015, 1, 1)

    frame = read_frame(engine, skus=["A"])
    flagged = frame.loc[frame["is_holiday"] == 1, "date"].dt.date.tolist()
    assert flagged == [date(2015, 12, 25)]
    assert frame.loc[frame["date"] == pd.Timestamp(2015, 12, 25), "is_event"].item() == 1


def test_sync_withdraws_holidays_the_package_no_longer_lists(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Product), [{"sku": "A", "region": "US"}])
        conn.execute(
            insert(CalendarEvent),
            [
                # Written by an earlier sync (an older `holidays` release): now withdrawn.
                {"date": date(2016, 3, 3), "name": "Old Holiday", "kind": "holiday",
                 "region": "US", "source": "holidays"},
                # Outside the synced window: left alone.
                {"date": date(2014, 3, 3), "name": "Old Holiday", "kind": "holiday",
                 "region": "US", "source": "holidays"},
                # A curated event on the same day: never touched.
                {"date": date(2016, 3, 3), "name": "Store party", "kind": "cultural",
                 "region": "US", "source": "custom"},
            ],
        )  # fmt: skip
    sync_holidays(engine, start=date(2016, 1, 1), end=date(2016, 12, 31))
    with engine.connect() as conn:
        names = set(
            conn.execute(
                select(CalendarEvent.date, CalendarEvent.name).where(
                    CalendarEvent.name.in_(["Old Holiday", "Store party", "Independence Day"])
                )
            ).all()
        )
    assert names == {
        (date(2014, 3, 3), "Old Holiday"),
        (date(2016, 3, 3), "Store party"),
        (date(2016, 7, 4), "Independence Day"),
    }


@pytest.mark.parametrize("regions", [[], [None]])
def test_sync_holidays_without_regions_writes_nothing(
    engine: Engine, regions: list[str | None]
) -> None:
    if regions:
        with engine.begin() as conn:
            conn.execute(insert(Product), [{"sku": "A", "region": r} for r in regions])
    assert sync_holidays(engine) == 0
    assert _count(engine) == 0
