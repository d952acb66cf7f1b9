"""The model registry: bundle versions in a models directory and the champion alias.

The alias is ``models_dir/champion.json``: the current champion, the stack of earlier champions
that rollback returns to, and an event history. It is only ever replaced whole (temp file +
``os.replace``) under an exclusive ``flock``, so concurrent promotes from several processes never
lose an update and readers never see a half-written alias.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from training.bundle import (
    Bundle,
    BundleError,
    Manifest,
    is_valid_version,
    load_bundle,
    read_manifest,
)

log = logging.getLogger(__name__)

ALIAS_NAME = "champion.json"
LOCK_NAME = ".registry.lock"
# Enough to roll back through a long streak of bad promotions without the alias growing forever.
MAX_STACK = 50
MAX_HISTORY = 500


class RegistryError(Exception):
    """A registry operation failed; the message says which and why."""


class UnknownVersion(RegistryError):
    """No bundle with this version exists in the models directory."""


class PromotionRefused(RegistryError):
    """The bundle does not load (checksums, versions, features), so the champion is unchanged."""


class NoPreviousChampion(RegistryError):
    """Rollback has nothing to go back to."""


class NoChampion(RegistryError):
    """No champion has been promoted yet."""


class AliasCorrupt(RegistryError):
    """champion.json exists but cannot be read."""


class RegistryLocked(RegistryError):
    """Another process held the registry lock for too long."""


class Registry:
    """Versions, the champion alias, promote and rollback over one models directory."""

    def __init__(self, models_dir: Path, *, lock_timeout: float = 30.0) -> None:
        self.models_dir = Path(models_dir)
        self.lock_timeout = lock_timeout

    @property
    def alias_path(self) -> Path:
        return self.models_dir / ALIAS_NAME

    def scan(self) -> tuple[list[Manifest], dict[str, str]]:
        """Readable manifests newest first, and broken bundle directories with the reason."""
        manifests: list[Manifest] = []
        broken: dict[str, str] = {}
        if not self.models_dir.is_dir():
            return manifests, broken
        for entry in self.models_dir.iterdir():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                manifests.append(read_manifest(entry))
            except BundleError as exc:
                broken[entry.name] = str(exc)
        manifests.sort(key=lambda m: (m.created_at, m.version), reverse=True)
        return manifests, broken

    def versions(self) -> list[Manifest]:
        """Manifests of every readable bundle, newest first; broken ones are logged and skipped."""
        manifests, broken = self.scan()
        for name, reason in sorted(broken.items()):
            log.warning("skipping broken bundle %s: %s", name, reason)
        return manifests

    def broken(self) -> dict[str, str]:
        """Bundle directories whose manifest cannot be read, with the reason."""
        return self.scan()[1]

    def get(self, version: str) -> Manifest:
        """The manifest of one version (BundleError subclasses if it is broken)."""
        return read_manifest(self._path(version))

    def load(self, version: str, *, verify: bool = True) -> Bundle:
        """Load one version's bundle with all of its checks."""
        return load_bundle(self._path(version), verify=verify, models_dir=self.models_dir)

    def champion(self) -> str | None:
        """The champion's version, or None before the first promotion."""
        champion: str | None = self._read_alias()["champion"]
        return champion

    def load_champion(self, *, verify: bool = True) -> Bundle:
        """Load the champion's bundle."""
        version = self.champion()
        if version is None:
            raise NoChampion(f"no champion has been promoted in {self.models_dir}")
        return self.load(version, verify=verify)

    def promote(self, version: str, *, reason: str = "") -> None:
        """Make a version the champion after checking that its bundle loads."""
        self._check_loads(version, "promote")
        with self._locked():
            alias = self._read_alias()
            previous = alias["champion"]
            if previous == version:
                return
            alias["stack"] = (alias["stack"] + [version])[-MAX_STACK:]
            self._write_event(alias, "promote", version, previous, reason)

    def rollback(self, *, reason: str = "") -> str:
        """Return to the champion before the current one and return its version."""
        with self._locked():
            alias = self._read_alias()
            if len(alias["stack"]) < 2:
                raise NoPreviousChampion(
                    f"no previous champion to roll back to (champion: {alias['champion']})"
                )
            target = alias["stack"][-2]
            # Checked under the lock so the stack cannot move between the check and the switch.
            self._check_loads(target, "roll back to")
            previous = alias["champion"]
            alias["stack"] = alias["stack"][:-1]
            self._write_event(alias, "rollback", target, previous, reason)
        return str(target)

    def history(self) -> list[dict[str, Any]]:
        """Champion changes newest first: action, version, previous, reason, at (ISO UTC)."""
        events: list[dict[str, Any]] = self._read_alias()["history"]
        return list(reversed(events))

    def generation(self) -> str:
        """An opaque token that changes whenever the champion changes; costs one stat()."""
        try:
            st = os.stat(self.alias_path)
        except FileNotFoundError:
            return "none"
        # os.replace gives each alias write a fresh inode: this changes even within one mtime tick.
        return f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

    def _path(self, version: str) -> Path:
        if not is_valid_version(version):
            raise UnknownVersion(f"{version!r} is not a valid version id")
        path = self.models_dir / version
        if not path.is_dir():
            raise UnknownVersion(f"no bundle {version} in {self.models_dir}")
        return path

    def _check_loads(self, version: str, action: str) -> None:
        try:
            self.load(version)
        except BundleError as exc:
            raise PromotionRefused(f"cannot {action} {version}: {exc}") from exc

    def _read_alias(self) -> dict[str, Any]:
        try:
            text = self.alias_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"champion": None, "generation": 0, "stack": [], "history": []}
        try:
            alias = json.loads(text)
            if not (
                isinstance(alias, dict)
                and isinstance(alias.get("stack"), list)
                and isinstance(alias.get("history"), list)
                and isinstance(alias.get("generation"), int)
                and (alias.get("champion") is None or isinstance(alias["champion"], str))
            ):
                raise ValueError("unexpected structure")
        except ValueError as exc:
            raise AliasCorrupt(f"{self.alias_path} is unreadable: {exc}") from exc
        return alias

    def _write_event(
        self, alias: dict[str, Any], action: str, version: str, previous: str | None, reason: str
    ) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        alias["champion"] = version
        alias["generation"] += 1
        alias["updated_at"] = now
        event = {
            "action": action,
            "version": version,
            "previous": previous,
            "reason": reason,
            "at": now,
            "generation": alias["generation"],
        }
        alias["history"] = (alias["history"] + [event])[-MAX_HISTORY:]
        self._write_alias(alias)
        log.info("champion %s: %s -> %s (%s)", action, previous, version, reason or "no reason")

    def _write_alias(self, alias: dict[str, Any]) -> None:
        tmp = self.models_dir / f".{ALIAS_NAME}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(alias, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.alias_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        with contextlib.suppress(OSError):
            fd = os.open(self.models_dir, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.models_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.models_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RegistryLocked(
                            f"registry lock {self.models_dir / LOCK_NAME} held for over "
                            f"{self.lock_timeout:.0f}s by another process"
                        ) from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock
