"""Forecasts already made: the worker's memory cache, then the newest stored forecast-all run.

An entry is keyed by SKU, model version, data token (every ingestion changes it), horizon and
quantiles, so new data or a new champion is never answered from an older entry.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from app.services.encode import stored_json
from featurestore import forecast_runs
from training.predict import quantile_column

CACHE_SIZE = 50_000

CacheKey = tuple[str, str, str, int, tuple[float, ...]]  # sku, version, token, horizon, levels


@dataclass(frozen=True)
class CachedForecast:
    """One SKU's forecast as served: its JSON object (a ``SkuForecast``) and its data date."""

    as_of: dt.date
    body: bytes


@dataclass
class ForecastCache:
    """A bounded LRU of served forecasts in front of the stored forecast-all runs."""

    engine: Engine
    size: int = CACHE_SIZE
    entries: OrderedDict[CacheKey, CachedForecast] = field(default_factory=OrderedDict)

    def peek(
        self, skus: Iterable[str], version: str, token: str, horizon: int, levels: tuple[float, ...]
    ) -> tuple[dt.date, list[bytes]] | None:
        """Every SKU's body from memory alone (no I/O, no reordering), or None if one is missing."""
        entries = self.entries
        parts = []
        as_of = None
        for sku in dict.fromkeys(skus):
            hit = entries.get((sku, version, token, horizon, levels))
            if hit is None:
                return None
            parts.append(hit.body)
            as_of = hit.as_of
        if as_of is None:
            return None
        return as_of, parts

    def lookup(
        self,
        skus: list[str],
        version: str,
        token: str,
        horizon: int,
        levels: tuple[float, ...],
        *,
        as_of: dt.date,
    ) -> dict[str, CachedForecast]:
        """The SKUs found in memory, then in the stored run (remembered); the rest are absent.

        Only a run of this champion ``version`` made from ``as_of`` (the store's last sales day)
        answers.
        """
        found = {}
        for sku in skus:
            key = (sku, version, token, horizon, levels)
            hit = self.entries.get(key)
            if hit is not None:
                found[sku] = hit
                self.entries.move_to_end(key)
        missing = [s for s in skus if s not in found]
        if missing:
            for sku, value in self._from_run(version, token, as_of, horizon, levels, missing):
                found[sku] = value
                self.remember((sku, version, token, horizon, levels), value)
        return found

    def remember(self, key: CacheKey, value: CachedForecast) -> None:
        self.entries[key] = value
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def _from_run(
        self,
        version: str,
        token: str,
        as_of: dt.date,
        horizon: int,
        levels: tuple[float, ...],
        skus: list[str],
    ) -> list[tuple[str, CachedForecast]]:
        """Forecasts of these SKUs from the newest forecast-all run for this model, data and day."""
        found = forecast_runs.cached_forecasts(
            self.engine, version, token, horizon, skus, as_of=as_of
        )
        if found is None:
            return []
        if [round(q, 6) for q in found.quantiles] != [round(q, 6) for q in levels]:
            return []
        names = [quantile_column(q) for q in levels]
        out = []
        for sku in skus:
            rows = found.rows.get(sku)
            if rows:
                body = stored_json(sku, rows, names, horizon, found.as_of)
                out.append((sku, CachedForecast(found.as_of, body)))
        return out
