"""Rejected rows: spilled to disk as they come, one CSV in row order at the end.

Most rejects are found chunk by chunk in row order; duplicate keys only once the whole file has
been read, so those are merged in when the file is finished.
"""

from __future__ import annotations

import csv
import heapq
import io
import os
import re
from collections import Counter
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from featurestore.config import get_settings
from featurestore.pseudonyms import WITHHELD
from featurestore.validate import MALFORMED, REJECT_COLUMNS, empty_rejects


class RejectSink:
    """Rejects spilled to disk as they come, merged in row order into one CSV at the end.

    ``private`` names the personal-data columns the source carries: their values never reach
    the file, nor does the text of a malformed record (it may hold them).
    """

    def __init__(self, path: Path, private: Collection[str] = ()) -> None:
        self.path = path
        self.private = frozenset(private)
        self.partial = path.with_name(path.name + ".partial")
        self.late: list[pd.DataFrame] = []
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self._fh: io.TextIOWrapper | None = None

    def _note(self, rejects: pd.DataFrame) -> None:
        self.count += len(rejects)
        labels = rejects["reason"] + " (" + rejects["column"] + ")"
        self.reasons.update({str(k): int(n) for k, n in labels.value_counts().items()})

    def _masked(self, rejects: pd.DataFrame) -> pd.DataFrame:
        if not self.private:
            return rejects
        private = rejects["column"].isin(self.private).to_numpy()
        malformed = (rejects["reason"] == MALFORMED).to_numpy()
        if not (private.any() or malformed.any()):
            return rejects
        value = rejects["value"].astype(object).copy()
        value[private] = WITHHELD
        # "7 fields, expected 9: <the record>": the count stays, the record goes.
        counts = value[malformed].astype(str).str.split(":", n=1).str[0]
        value[malformed] = counts + ": record " + WITHHELD
        return rejects.assign(value=value)

    def add(self, rejects: pd.DataFrame) -> None:
        if rejects.empty:
            return
        rejects = self._masked(rejects)
        self._note(rejects)
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.partial, "w", newline="", encoding="utf-8")  # noqa: SIM115
            csv.writer(self._fh).writerow(REJECT_COLUMNS)
        rejects[list(REJECT_COLUMNS)].to_csv(self._fh, header=False, index=False)

    def add_late(self, rejects: pd.DataFrame) -> None:
        """Rejects found after the whole file was read (duplicate keys), sorted by row."""
        if rejects.empty:
            return
        rejects = self._masked(rejects)
        self._note(rejects)
        self.late.append(rejects)

    def finish(self, *, stale: bool) -> Path | None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.count == 0:
            if stale and self.path.exists():
                self.path.unlink()  # an old reject file would describe a different load
            return None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        late = pd.concat(self.late, ignore_index=True) if self.late else empty_rejects()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(REJECT_COLUMNS)
            early: Iterator[list[str]] = iter(())
            fh = None
            if self.partial.exists():
                fh = open(self.partial, newline="", encoding="utf-8")  # noqa: SIM115
                early = csv.reader(fh)
                next(early, None)
            try:
                late_rows: list[list[str]] = late[list(REJECT_COLUMNS)].astype(str).values.tolist()
                writer.writerows(heapq.merge(early, late_rows, key=_row_number))
            finally:
                if fh is not None:
                    fh.close()
        os.replace(tmp, self.path)
        self.partial.unlink(missing_ok=True)
        return self.path

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self.partial.unlink(missing_ok=True)


def _row_number(record: Any) -> int:
    return int(record[0])


def merge_rejects(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Two chunks' rejects as one frame in row order."""
    if first.empty:
        return second
    if second.empty:
        return first
    return pd.concat([first, second], ignore_index=True).sort_values("row", kind="stable")


def default_reject_path(path: Path) -> Path:
    """``<file>.rejects.csv`` next to the input, or under the data directory if that is
    read-only."""
    name = path.name + ".rejects.csv"
    if os.access(path.parent, os.W_OK):
        return path.with_name(name)
    return data_reject_path(path.name)


def data_reject_path(label: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "ingest"
    return get_settings().data_dir / "rejects" / f"{safe}.rejects.csv"
