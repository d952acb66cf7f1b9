"""The synthetic calendar: custom events (paydays, sports finals) and each store's day effects
(public holidays, Sunday closing in Germany, the run-up to Christmas, Thanksgiving)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import holidays
import numpy as np
import pandas as pd

from training.synth.catalogue import CATEGORY_WEEK, Array, SynthConfig


def all_days(cfg: SynthConfig) -> pd.DatetimeIndex:
    """Every day from the first sales day to the end of the planning horizon."""
    return pd.date_range(cfg.first_day(), periods=cfg.n_days + cfg.future_days, freq="D")


def _thanksgiving(year: int) -> dt.date:
    nov1 = dt.date(year, 11, 1)
    return nov1 + dt.timedelta(days=(3 - nov1.weekday()) % 7 + 21)


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> dt.date:
    nxt = dt.date(year + month // 12, month % 12 + 1, 1)
    last = nxt - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def custom_events(days: pd.DatetimeIndex) -> pd.DataFrame:
    """Paydays (first of the month, everywhere) and two sports finals (US, DE)."""
    years = range(days[0].year, days[-1].year + 1)
    rows: list[tuple[dt.date, str, str, str]] = [
        (d.date(), "Payday", "cultural", "") for d in days if d.day == 1
    ]
    for y in years:
        rows.append((_nth_weekday(y, 2, 6, 2), "Super Bowl", "sporting", "US"))
        rows.append((_last_weekday(y, 5, 5), "Cup Final", "sporting", "DE"))
    lo, hi = days[0].date(), days[-1].date()
    frame = pd.DataFrame(
        [r for r in rows if lo <= r[0] <= hi], columns=["date", "name", "kind", "region"]
    )
    frame["date"] = pd.to_datetime(frame["date"]).astype("datetime64[s]")
    for col in ("name", "kind", "region"):
        frame[col] = frame[col].astype("str")
    return frame.sort_values(["date", "name"], ignore_index=True)


def calendar_effects(
    cfg: SynthConfig, days: pd.DatetimeIndex, categories: Sequence[str]
) -> dict[tuple[int, str], Array]:
    """Multiplicative day effects per (store index, category): holidays, Christmas, events."""
    years = list(range(days[0].year, days[-1].year + 1))
    dates = days.date
    month, dom = days.month.to_numpy(), days.day.to_numpy()
    dow = days.day_of_week.to_numpy()
    payday = np.ones(len(days))
    firsts = np.flatnonzero(dom == 1)
    for lag, lift in enumerate((1.12, 1.06, 1.03)):
        idx = firsts + lag
        payday[idx[idx < len(days)]] = lift
    xmas_run = np.where((month == 12) & (dom >= 10) & (dom <= 24), 1.0 + 0.045 * (dom - 9), 1.0)
    xmas_run = np.where((month == 12) & (dom == 24), 1.35, xmas_run)
    day_index = {d: i for i, d in enumerate(dates)}

    def at(d: dt.date) -> int | None:
        return day_index.get(d)

    out: dict[tuple[int, str], Array] = {}
    region_cache: dict[str, Array] = {}
    for s, (_store, region) in enumerate(cfg.stores):
        country, _, subdiv = region.partition("-")
        if region not in region_cache:
            public = holidays.country_holidays(country, subdiv=subdiv or None, years=years)
            is_holiday = np.array([d in public for d in dates])
            eff = np.where(is_holiday, 0.0 if country == "DE" else 0.9, 1.0)
            if country == "DE":
                eff = np.where(dow == 6, 0.0, eff)  # shops closed on Sundays
                eff = eff * np.where(dow == 5, 1.25, 1.0)  # ... so Saturdays are busier
            eff = eff * xmas_run * payday
            for y in years:
                closed_new_year = 0.0 if country == "DE" else 0.45
                for d, mult in ((dt.date(y, 12, 25), 0.02), (dt.date(y, 1, 1), closed_new_year)):
                    i = at(d)
                    if i is not None:
                        eff[i] = mult  # (nearly) closed, whatever else happens that day
                i = at(dt.date(y, 12, 31))
                if i is not None:
                    eff[i] *= 1.15
                if country == "US":
                    tg = _thanksgiving(y)
                    for d, mult in (
                        (tg, 0.3),
                        (tg + dt.timedelta(days=1), 1.9),
                        (tg - dt.timedelta(days=1), 1.3),
                    ):
                        i = at(d)
                        if i is not None:
                            eff[i] = mult
            region_cache[region] = eff
        base = region_cache[region]
        for cat in categories:
            eff = base.copy()
            if cat == "FOODS":  # snacks and drinks for the sports final and the eve before it
                for y in years:
                    final = _nth_weekday(y, 2, 6, 2) if country == "US" else _last_weekday(y, 5, 5)
                    i = at(final)
                    if i is not None:
                        eff[max(i - 1, 0) : i + 1] *= 1.5
            out[(s, cat)] = eff
    return out


def weekly_profiles(cfg: SynthConfig, categories: Sequence[str]) -> dict[str, Array]:
    return {c: np.array(CATEGORY_WEEK[c]) / np.mean(CATEGORY_WEEK[c]) for c in categories}
