"""The live-accuracy and fallback gauges of /metrics, read from the store at most once a minute.

Each worker has its own Prometheus registry, so each refreshes its gauges itself when scraped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine

from app.observability import FALLBACK_ACTIVE, FALLBACK_SKUS, LIVE_BIAS, LIVE_COVERAGE, LIVE_WAPE
from app.services.accuracy import live_window
from app.services.forecasting import ForecastService

WINDOWS = (7, 28)
REFRESH_S = 60.0


@dataclass
class LiveGauges:
    """When the gauges were last refreshed."""

    refreshed: float = -REFRESH_S

    def due(self) -> bool:
        return time.monotonic() - self.refreshed >= REFRESH_S

    def refresh(self, engine: Engine, version: str, forecasts: ForecastService) -> None:
        """The champion's live WAPE, bias and coverage per window; the fallback in force."""
        self.refreshed = time.monotonic()
        for days in WINDOWS:
            window = live_window(engine, version, days)
            label = f"{days}d"
            for gauge, value in (
                (LIVE_WAPE, window.wape),
                (LIVE_BIAS, window.bias),
                (LIVE_COVERAGE, window.coverage),
            ):
                gauge.labels(label).set(float("nan") if value is None else value)
        snap = forecasts.history.current()
        event = None if snap is None else forecasts.fallback(version, snap)
        FALLBACK_ACTIVE.set(0 if event is None else 1)
        chosen = None if event is None else event.detail.get("skus")
        if event is None:
            FALLBACK_SKUS.set(0)
        elif chosen == "all" and snap is not None:
            FALLBACK_SKUS.set(len(snap.products))
        else:
            FALLBACK_SKUS.set(len(chosen or ()))


LIVE = LiveGauges()
