"""The champion bundle in memory, swapped atomically when the registry's alias changes.

Every request asks ``current()``, which costs one ``stat`` of the alias file: when the champion
changed (a promote or rollback from the API, the CLI or another worker), the new bundle is loaded
and verified, then the reference is swapped. Requests already holding the old bundle finish on it.
A bundle that fails its checks is refused and the old champion keeps serving.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import structlog

from app.observability import MODEL
from training.bundle import Bundle, BundleError
from training.predict import BundleForecaster
from training.registry import Registry, RegistryError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Loaded:
    """A loaded champion and the alias generation it was loaded for."""

    bundle: Bundle
    forecaster: BundleForecaster
    generation: str

    @property
    def version(self) -> str:
        return self.bundle.version


class ChampionHolder:
    """Holds the champion; reloads it when the registry's generation token changes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._loaded: Loaded | None = None
        self._seen_generation: str | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None

    def current(self) -> Loaded | None:
        """The champion to answer this request with (None while there is none)."""
        generation = self.registry.generation()
        if generation != self._seen_generation:
            with self._lock:
                if generation != self._seen_generation:
                    self._reload(generation)
        return self._loaded

    def peek(self) -> Loaded | None:
        """The champion if the alias is unchanged since it was loaded (never loads: no I/O but
        the alias's stat, so the event loop may call it); None when a reload is due."""
        if self.registry.generation() != self._seen_generation:
            return None
        return self._loaded

    def _reload(self, generation: str) -> None:
        try:
            version = self.registry.champion()
            if version is None:
                self._seen_generation = generation
                return
            if self._loaded is not None and self._loaded.version == version:
                self._seen_generation = generation
                return
            bundle = self.registry.load(version)
            previous = self._loaded
            self._loaded = Loaded(bundle, BundleForecaster(bundle), generation)
            if previous is not None:
                MODEL.remove(previous.version)
            MODEL.labels(version).set(1)
            self.last_error = None
            log.info("champion_loaded", version=version)
        except (BundleError, RegistryError, OSError) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("champion_refused", error=self.last_error)
        self._seen_generation = generation
