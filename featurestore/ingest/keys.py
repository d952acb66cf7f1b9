"""Keys a file holds more than once: every copy is rejected, found without asking the database.

Only 64-bit hashes and row numbers stay in memory (16 bytes a row); the keys themselves are
spilled to a temporary Arrow file and only rows whose hash repeats are read back and compared.
"""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.schema import Entity
from featurestore.validate import DUPLICATE, empty_rejects, make_rejects


class KeyIndex:
    """Every accepted row's key, to find keys a file holds more than once."""

    def __init__(self, ent: Entity) -> None:
        self.key = list(ent.key)
        self.hashes: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self._spill: Any = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None

    def __enter__(self) -> KeyIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        parts = {}
        for name in self.key:
            col = frame[name]
            if pd.api.types.is_datetime64_any_dtype(col.dtype):
                parts[name] = col.astype("datetime64[s]").astype("int64")
            else:
                parts[name] = col
        keys = pd.DataFrame(parts)
        hashed = pd.util.hash_pandas_object(keys, index=False)
        self.hashes.append(hashed.to_numpy(dtype=np.uint64))
        rows = frame["_row"].to_numpy(dtype=np.int64)
        self.rows.append(rows)
        arrays = [pa.array(rows)]
        for name in self.key:
            if pd.api.types.is_numeric_dtype(keys[name].dtype):
                arrays.append(pa.array(keys[name].to_numpy(dtype=np.int64)))
            else:
                arrays.append(flat(pa.array(keys[name], type=pa.large_string(), from_pandas=True)))
        batch = pa.RecordBatch.from_arrays(arrays, names=["_row", *self.key])
        if self._writer is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
            self._writer = pa.ipc.new_stream(self._spill, batch.schema)
        self._writer.write_batch(batch)

    def _candidates(self) -> np.ndarray:
        """Rows whose key hash occurs more than once."""
        if not self.hashes:
            return np.empty(0, dtype=np.int64)
        hashes = np.concatenate(self.hashes)
        rows = np.concatenate(self.rows)
        self.hashes, self.rows = [], []
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        same = ordered[1:] == ordered[:-1]
        hit = np.zeros(len(ordered), dtype=bool)
        hit[1:] |= same
        hit[:-1] |= same
        return np.sort(rows[order][hit])

    def duplicates(self) -> pd.DataFrame:
        """``_row`` and key of every row whose exact key another row of the file also has."""
        candidates = self._candidates()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        found = pd.DataFrame({"_row": pd.Series(dtype="int64")})
        if len(candidates) and self._spill is not None:
            self._spill.seek(0)
            wanted = pa.array(candidates)
            parts = [
                batch.filter(pc.is_in(batch.column(0), value_set=wanted)).to_pandas()
                for batch in pa.ipc.open_stream(self._spill)
            ]
            found = pd.concat(parts, ignore_index=True)
        self.close()
        if found.empty:
            return found
        return found[found.duplicated(subset=self.key, keep=False)].sort_values("_row")


def duplicate_rejects(dup: pd.DataFrame, ent: Entity) -> pd.DataFrame:
    """One reject per copy of a duplicated key, its value the key joined by ``|``."""
    key = list(ent.key)
    if dup.empty:
        return empty_rejects()
    shown = pd.DataFrame(index=dup.index)
    for name in key:
        kind = next(c.kind for c in ent.columns if c.name == name)
        if kind == "date":  # keys hold days as seconds since the epoch
            shown[name] = pd.to_datetime(dup[name], unit="s").dt.strftime("%Y-%m-%d")
        else:
            shown[name] = dup[name].astype(str)
    values = shown.agg("|".join, axis=1).tolist()
    return make_rejects(dup["_row"].to_numpy(), DUPLICATE, ",".join(key), values)


def flat(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (pandas columns built by concatenation convert to chunked ones)."""
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
