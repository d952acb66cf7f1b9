"""Forecasts already made: the worker's memory cache, then the newest stored forecast-all run.

An entry is keyed by SKU, model version, data token (every file ingestion changes it), horizon
and quantiles, so new data or a new champion is never answered from an older entry. Orders pushed
for a SKU drop that SKU's entries only (``drop``), and a stored run read before the push no
longer answers for it. Entries of an older champion or data token can never answer again: the
first entry of a new one drops them all, so a promote or a file load does not leave a second
cache's worth of dead entries in the worker (docs/benchmarks.md, Soak). The entries and their
bytes are on /metrics (``salesfc_forecast_cache_entries``, ``salesfc_forecast_cache_bytes``).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqlalchemy import Engine

from app.observability import CACHE_BYTES, CACHE_ENTRIES
from app.services.encode import stored_json
from featurestore import forecast_runs
from training.predict import quantile_column

CACHE_SIZE = 50_000

CacheKey = tuple[str, str, str, int, tuple[float, ...]]  # sku, version, token, horizon, levels
# A push stamps its SKUs when it starts writing; the run's reading may have started a little
# before its recorded time. SKUs pushed this close to a run are computed, not read from it.
RUN_MARGIN = dt.timedelta(seconds=60)


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
    # Each SKU's keys, so that a push drops its entries without a scan of the whole cache.
    keys: dict[str, set[CacheKey]] = field(default_factory=dict)
    # The (model version, data token) of the newest entry; older ones are dropped when it moves.
    generation: tuple[str, str] | None = None
    nbytes: int = 0

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
        pushed_since: Callable[[dt.datetime], set[str]] | None = None,
    ) -> dict[str, CachedForecast]:
        """The SKUs found in memory, then in the stored run (remembered); the rest are absent.

        Only a run of this champion ``version`` made from ``as_of`` (the store's last sales day)
        answers, and not for the SKUs ``pushed_since`` names (orders pushed since it read).
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
            run = self._from_run(version, token, as_of, horizon, levels, missing, pushed_since)
            for sku, value in run:
                found[sku] = value
                self.remember((sku, version, token, horizon, levels), value)
        return found

    def remember(self, key: CacheKey, value: CachedForecast) -> None:
        generation = (key[1], key[2])
        if generation != self.generation:
            self._keep_only(generation)
        previous = self.entries.get(key)
        if previous is not None:
            self.nbytes -= len(previous.body)
        self.entries[key] = value
        self.nbytes += len(value.body)
        self.keys.setdefault(key[0], set()).add(key)
        if len(self.entries) > self.size:
            old, dropped = self.entries.popitem(last=False)
            self.nbytes -= len(dropped.body)
            self._unindex(old)
        self._publish()

    def _keep_only(self, generation: tuple[str, str]) -> None:
        """Drop every entry of another model version or data token: none can answer again."""
        self.generation = generation
        stale = [k for k in self.entries if (k[1], k[2]) != generation]
        for key in stale:
            self.nbytes -= len(self.entries.pop(key).body)
            self._unindex(key)

    def _publish(self) -> None:
        CACHE_ENTRIES.set(len(self.entries))
        CACHE_BYTES.set(self.nbytes)

    def drop(self, skus: Iterable[str]) -> int:
        """Forget every entry of these SKUs (their data changed); how many were dropped."""
        dropped = 0
        for sku in skus:
            for key in list(self.keys.pop(sku, ())):
                value = self.entries.pop(key, None)
                if value is not None:
                    self.nbytes -= len(value.body)
                    dropped += 1
        if dropped:
            self._publish()
        return dropped

    def _unindex(self, key: CacheKey) -> None:
        held = self.keys.get(key[0])
        if held is not None:
            held.discard(key)
            if not held:
                del self.keys[key[0]]

    def _from_run(
        self,
        version: str,
        token: str,
        as_of: dt.date,
        horizon: int,
        levels: tuple[float, ...],
        skus: list[str],
        pushed_since: Callable[[dt.datetime], set[str]] | None,
    ) -> list[tuple[str, CachedForecast]]:
        """Forecasts of these SKUs from the newest forecast-all run for this model, data and day."""
        found = forecast_runs.cached_forecasts(
            self.engine, version, token, horizon, skus, as_of=as_of
        )
        if found is None:
            return []
        stale = set() if pushed_since is None else pushed_since(found.read_at - RUN_MARGIN)
        if [round(q, 6) for q in found.quantiles] != [round(q, 6) for q in levels]:
            return []
        names = [quantile_column(q) for q in levels]
        out = []
        for sku in skus:
            rows = found.rows.get(sku)
            if rows and sku not in stale:
                body = stored_json(sku, rows, names, horizon, found.as_of)
                out.append((sku, CachedForecast(found.as_of, body)))
        return out
