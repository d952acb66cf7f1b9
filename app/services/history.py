"""The store as serving reads it: a per-worker snapshot and each computed forecast's window.

The snapshot (data token, last sales date, products, events) changes only with a file ingestion;
its token is checked at most every ``token_ttl`` seconds, and with it the per-SKU data versions
that pushed orders bump (featurestore.data_versions): a SKU whose version moved has its cached
forecasts dropped (``on_changed``) and its window read with SQL until the catalogue window is
read again, while every other SKU keeps both. The window comes from the snapshot's
in-memory catalogue window (read once per token, so never staler than the snapshot) or, when the
catalogue would exceed ``window_bytes`` or the window is being read, with SQL. Figures and the
freshness rule: docs/operations.md.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd
from sqlalchemy import Engine

from app.errors import InsufficientHistory, ModelNotReady, SkuDiscontinued, UnknownSku
from featurestore.config import get_settings
from featurestore.data_versions import Version, read_versions
from featurestore.drift_events import Event, fallback_state
from featurestore.readers import EventRows, latest_window, read_events, read_products
from featurestore.stats import store_state
from featurestore.window_cache import ROW_BYTES, CatalogueWindow

# How long a worker trusts its data token before asking the database again (seconds). Forecasts
# for data ingested in the meantime are served at most this much later.
TOKEN_TTL = 1.0
# SKUs changed by pushes since the catalogue window was read, past which it is read again (its
# share of the catalogue; below it they are read with SQL, one SKU's rows each).
STALE_WINDOW_SHARE = 0.02
WINDOW_REREAD_S = 30.0  # at most this often under a steady stream of pushes

Columns = dict[str, np.ndarray]


@dataclass
class StoreSnapshot:
    """What serving reads from the store that only an ingestion changes."""

    token: str
    as_of: dt.date | None
    products: pd.DataFrame  # every product, sorted by sku
    position: dict[str, int]  # sku -> row of products
    events: EventRows
    checked: float  # time.monotonic() of the last token check
    # The catalogue's history window under this token (read on first need).
    window: CatalogueWindow | None = field(default=None, repr=False)
    window_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # Per-SKU data versions known now, and those the catalogue window was read under.
    versions: dict[str, Version] = field(default_factory=dict, repr=False)
    window_versions: dict[str, Version] = field(default_factory=dict, repr=False)
    polled: dt.datetime | None = field(default=None, repr=False)  # last look at the versions
    window_read: float = field(default=0.0, repr=False)  # time.monotonic() of the window's read
    # The newest fallback decision (featurestore.drift_events), checked with the token.
    fallback: Event | None = field(default=None, repr=False)

    def version(self, sku: str) -> int:
        """The SKU's data version (0: never changed by a push)."""
        known = self.versions.get(sku)
        return 0 if known is None else known.version

    def stale_in_window(self, skus: Sequence[str]) -> bool:
        """Whether a push changed one of these SKUs after the catalogue window was read."""
        return any(self.versions.get(s) != self.window_versions.get(s) for s in skus)

    def changed_since(self, when: dt.datetime) -> set[str]:
        """SKUs a push changed at ``when`` or later."""
        return {s for s, v in self.versions.items() if v.changed_at >= when}

    def select(self, skus: Sequence[str]) -> pd.DataFrame:
        """The products of these SKUs, sorted by sku (every one must be known)."""
        rows = sorted(self.position[s] for s in set(skus))
        return self.products.iloc[rows].reset_index(drop=True)


class History(NamedTuple):
    """What a forecast is computed from: the data date, the products and their window."""

    as_of: dt.date
    products: pd.DataFrame
    data: Columns | pd.DataFrame  # the window's column arrays, or a frame


@dataclass
class HistorySource:
    """The snapshot and the windows read under it; the one place a window's source is chosen."""

    engine: Engine
    token_ttl: float = TOKEN_TTL
    # Bytes the in-memory catalogue window may take (0: read every window with SQL).
    window_bytes: int = field(default_factory=lambda: get_settings().serve_window_mb << 20)
    # Told the SKUs whose data version moved (the forecast cache drops their entries).
    on_changed: Callable[[list[str]], object] | None = field(default=None, repr=False)
    _snapshot: StoreSnapshot | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def snapshot(self, *, force: bool = False) -> StoreSnapshot:
        """The store's snapshot, its token checked if older than ``token_ttl`` (or forced)."""
        snap = self._snapshot
        if snap is not None and not force and time.monotonic() - snap.checked < self.token_ttl:
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and not force and time.monotonic() - snap.checked < self.token_ttl:
                return snap
            now = time.monotonic()
            token, as_of = store_state(self.engine)
            if snap is not None and snap.token == token and snap.as_of == as_of:
                self._poll(snap)
                snap.checked = now
                return snap
            polled = dt.datetime.now(dt.UTC)
            versions = read_versions(self.engine)
            products = read_products(self.engine)
            snap = StoreSnapshot(
                token=token,
                as_of=as_of,
                products=products,
                position={s: i for i, s in enumerate(products["sku"])},
                events=read_events(self.engine),
                checked=now,
                versions=versions,
                polled=polled,
                fallback=fallback_state(self.engine),
            )
            self._snapshot = snap
            return snap

    def _poll(self, snap: StoreSnapshot) -> None:
        """Take in the versions pushes changed since the last look; tell who listens."""
        polled = dt.datetime.now(dt.UTC)
        found = read_versions(self.engine, since=snap.polled)
        snap.polled = polled
        self.changed(snap, found)
        snap.fallback = fallback_state(self.engine)

    def changed(self, snap: StoreSnapshot, found: dict[str, Version]) -> list[str]:
        """Record newer versions (from a poll, or this worker's own push); the SKUs that moved."""
        moved = [s for s, v in found.items() if v.version > snap.version(s)]
        if not moved:
            return []
        versions = dict(snap.versions)
        versions.update({s: found[s] for s in moved})
        snap.versions = versions  # replaced whole: readers on other threads see one or the other
        stale = sum(1 for s, v in versions.items() if snap.window_versions.get(s) != v)
        if (
            snap.window is not None
            and stale > max(1, len(snap.products)) * STALE_WINDOW_SHARE
            and time.monotonic() - snap.window_read > WINDOW_REREAD_S
        ):
            snap.window = None  # read again on the next need, every push in it
        if self.on_changed is not None:
            self.on_changed(moved)
        return moved

    def note_push(self, found: dict[str, Version]) -> None:
        """This worker's own push, known before any poll: its SKUs move at once."""
        snap = self._snapshot
        if snap is not None and found:
            with self._lock:
                self.changed(snap, found)

    def current(self) -> StoreSnapshot | None:
        """The snapshot as it is (no check, no I/O), None before the first."""
        return self._snapshot

    def version(self, sku: str) -> int:
        """The SKU's data version in the current snapshot (0: none yet, or never pushed)."""
        snap = self._snapshot
        return 0 if snap is None else snap.version(sku)

    def fresh_token(self) -> str | None:
        """The data token if it was checked within the TTL (no I/O), else None."""
        snap = self._snapshot
        if snap is None or time.monotonic() - snap.checked >= self.token_ttl:
            return None
        return snap.token

    def products(
        self, snap: StoreSnapshot, skus: Sequence[str]
    ) -> tuple[StoreSnapshot, dt.date, pd.DataFrame]:
        """The snapshot (refreshed once if it lacks a SKU: 404 if still), data date, products."""
        if not all(s in snap.position for s in skus):
            snap = self.snapshot(force=True)
            missing = sorted(set(skus) - set(snap.position))
            if missing:
                raise UnknownSku(f"unknown SKU(s): {', '.join(missing[:20])}")
        if snap.as_of is None:
            raise ModelNotReady("the feature store holds no sales yet")
        return snap, snap.as_of, snap.select(skus)

    def read(
        self,
        snap: StoreSnapshot,
        skus: list[str],
        *,
        n_days: int,
        horizon: int,
        max_horizon: int,
        frame: bool,
    ) -> History:
        """The SKUs' window up to ``horizon`` days ahead, every SKU checked to have days ahead.

        From the catalogue window (its column arrays; a frame if ``frame``), else with SQL.
        """
        snap, as_of, products = self.products(snap, skus)
        window = self.window(snap, n_days, max_horizon)
        data: Columns | pd.DataFrame
        if window is None or snap.stale_in_window(skus):
            data = self.sql(snap, skus, n_days, horizon)
        elif frame:
            data = window.frame(skus, horizon)
        else:  # no frame is built (nor read back by the builders)
            data = window.columns(skus, horizon)
        check_covered(
            products, np.asarray(data["sku"], dtype=object), np.asarray(data["date"]), as_of
        )
        return History(as_of, products, data)

    def sql(self, snap: StoreSnapshot, skus: list[str], n_days: int, horizon: int) -> pd.DataFrame:
        """The SKUs' window read with SQL (events from the snapshot)."""
        return latest_window(
            self.engine, skus, n_days=n_days, horizon=horizon, as_of=snap.as_of, events=snap.events
        )

    def window(self, snap: StoreSnapshot, n_days: int, horizon: int) -> CatalogueWindow | None:
        """The snapshot's catalogue window of this shape, read now if missing; or None.

        None (read with SQL instead) when the window would exceed ``window_bytes`` or another
        request is reading it right now (it does not wait).
        """
        as_of = snap.as_of
        if as_of is None or self.window_bytes <= 0:
            return None
        window = snap.window
        if window is not None and window.n_days == n_days and window.horizon == horizon:
            return window
        if len(snap.products) * (n_days + horizon) * ROW_BYTES > self.window_bytes:
            return None
        if not snap.window_lock.acquire(blocking=False):
            return None
        try:
            window = snap.window
            if window is None or window.n_days != n_days or window.horizon != horizon:
                # Versions before the read: a push committed meanwhile counts as stale (SQL).
                versions, started = snap.versions, time.monotonic()
                window = CatalogueWindow.read(self.engine, n_days, horizon, as_of, snap.events)
                if window.nbytes > self.window_bytes:
                    return None
                snap.window, snap.window_versions, snap.window_read = window, versions, started
            return window
        finally:
            snap.window_lock.release()


def check_covered(
    products: pd.DataFrame, sku: np.ndarray, date: np.ndarray, as_of: dt.date
) -> None:
    """Every requested SKU has days to forecast (rows after as_of), or a clear reason why not."""
    ahead = set(sku[date > np.datetime64(as_of)].tolist())
    skus = products["sku"].to_numpy(dtype=object)
    absent = [i for i, s in enumerate(skus) if s not in ahead]
    if not absent:
        return
    status = products["status"].to_numpy(dtype=object)
    gone = [skus[i] for i in absent if status[i] == "discontinued"]
    if gone:
        raise SkuDiscontinued(f"discontinued, no forecast: {', '.join(gone[:20])}")
    raise InsufficientHistory(
        f"no sales history or launch date up to {as_of} for: "
        f"{', '.join(str(skus[i]) for i in absent[:20])}"
    )
