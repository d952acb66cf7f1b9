"""The SQL of one ingestion: stage the accepted rows, take duplicates out, upsert, log.

Rows are staged in a temporary table (binary COPY on PostgreSQL, executemany on SQLite) and
upserted into the target once the whole file is read; the entity's declared steps
(featurestore.ingest.entities) run around the upsert, on the same connection and transaction.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Connection

from featurestore.ingest.bulk import CopyStream, build_indexes, drop_indexes, worth_rebuilding
from featurestore.ingest.keys import flat
from featurestore.ingest.report import IngestReport, MixedDays, log_in
from featurestore.schema import Entity
from featurestore.tables import Base
from featurestore.validate import DEFAULTS, ColumnPlan

if TYPE_CHECKING:
    from featurestore.ingest.entities import IngestEntity, Totals

_IN_BATCH = 500
ANALYZE_ROWS = 100_000

_ARROW_TYPES: dict[str, pa.DataType] = {
    "str": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "datetime": pa.timestamp("us", tz="UTC"),
    "bool": pa.bool_(),
    "json": pa.string(),
}


class Store:
    """The SQL of one ingestion, on the connection that holds its transaction."""

    def __init__(
        self,
        conn: Connection,
        ent: Entity,
        spec: IngestEntity,
        plan: ColumnPlan,
        extras: list[str],
    ) -> None:
        self.conn = conn
        self.ent = ent
        self.spec = spec
        self.pg = conn.dialect.name == "postgresql"
        self.cache_size: Any = None
        self.staged = 0
        self.table = Base.metadata.tables[ent.table]
        self.columns: list[tuple[str, str]] = [(c.name, c.kind) for c in ent.columns]
        self.columns += list(spec.computed)
        self.stage = f"_stage_{ent.name}"
        self._copy: CopyStream | None = None
        # PostgreSQL: the first file of a direct_first_load entity goes straight into its table.
        self.direct = False
        self.totals: Totals | None = None
        # SKU-days where directly loaded daily sales and order lines met (set by a step).
        self.mixed: MixedDays | None = None
        present = set(plan.present) | ({"attributes"} if extras else set())
        defaults = set(DEFAULTS.get(ent.name, {}))
        key = list(ent.key)
        computed = [name for name, _ in spec.computed]
        self.insert_cols = [c for c, _ in self.columns if c in key or c in present or c in defaults]
        self.insert_cols += [c for c in computed if c not in self.insert_cols]
        self.update_cols = [
            c
            for c in self.insert_cols
            if c not in key and (c in present or c in computed or c in spec.always_set)
        ]
        self._begin()

    def q(self, name: str) -> str:
        return str(self.conn.dialect.identifier_preparer.quote(name))

    def _begin(self) -> None:
        cols = ", ".join(
            f"{self.q(name)} {self.table.c[name].type.compile(dialect=self.conn.dialect)}"
            for name, _ in self.columns
        )
        if self.pg and self.spec.few_rows:
            # One round trip; jit stays off (nested loops' costs could make a plan look big).
            self.conn.exec_driver_sql(
                "SELECT set_config('enable_hashjoin', 'off', true), "
                "set_config('enable_mergejoin', 'off', true), set_config('jit', 'off', true), "
                "set_config('TimeZone', 'UTC', true)"
            )
            self.conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {self.stage} (_row BIGINT, {cols}) ON COMMIT DROP"
            )
        elif self.pg:
            # Hash joins and aggregates over a whole file stay in memory instead of spilling.
            self.conn.exec_driver_sql("SET LOCAL work_mem = '256MB'")
            # Compiling these one-off bulk statements costs more than it saves.
            self.conn.exec_driver_sql("SET LOCAL jit = off")
            self.conn.exec_driver_sql("SET LOCAL TimeZone = 'UTC'")
            # Index builds sort in memory.
            self.conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
            if self.spec.direct_first_load and not self._has_rows():
                # A first (history) file needs no upsert: its rows are copied into the table
                # itself, indexes dropped and built once at the end. The lock keeps a concurrent
                # load from adding rows meanwhile; it is held until commit.
                self.conn.exec_driver_sql(f"LOCK TABLE {self.table.name} IN ACCESS EXCLUSIVE MODE")
                self.direct = not self._has_rows()
            if self.direct:
                self.totals = self.spec.totals() if self.spec.totals is not None else None
                drop_indexes(self.conn, self.table)
            else:
                self.conn.exec_driver_sql(
                    f"CREATE TEMPORARY TABLE {self.stage} (_row BIGINT, {cols}) ON COMMIT DROP"
                )
        else:
            # A page cache of 128 MiB for this load: with SQLite's 2 MiB default the inserts into
            # the target's indexes spend their time re-reading pages.
            self.cache_size = self.conn.exec_driver_sql("PRAGMA cache_size").scalar()
            self.conn.exec_driver_sql("PRAGMA cache_size = -131072")
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{self.stage}")
            self.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {self.stage} (_row INTEGER, {cols})")

    def _has_rows(self) -> bool:
        return bool(
            self.conn.exec_driver_sql(f"SELECT EXISTS (SELECT 1 FROM {self.table.name})").scalar()
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._copy is not None:  # a failure mid-file: end the COPY so the rollback can run
            self._copy.abort(*exc)
        # PostgreSQL drops its temporary tables and SET LOCAL values with the transaction; a
        # pooled SQLite connection would keep both.
        if self.pg:
            return
        for table in (self.stage, *self.spec.temp_tables):
            self.conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")
        self.conn.exec_driver_sql(f"PRAGMA cache_size = {int(self.cache_size or -2000)}")

    def known_skus(self) -> pd.Index | None:
        """The SKUs the file's rows may name (None: no check)."""
        if "sku" not in {c.name for c in self.ent.columns} or not self.spec.check_skus:
            return None
        skus = self.conn.exec_driver_sql("SELECT sku FROM products").scalars().all()
        return pd.Index(skus, dtype="str")

    def _arrow(self, frame: pd.DataFrame) -> pa.Table:
        arrays: list[pa.Array] = [pa.array(frame["_row"].to_numpy(dtype=np.int64))]
        for name, kind in self.columns:
            col = frame[name]
            if kind == "json":
                texts = [None if v is None else json.dumps(v) for v in col.tolist()]
                arrays.append(pa.array(texts, type=pa.string()))
            elif kind in ("bool", "str"):
                arrays.append(flat(pa.array(col, type=_ARROW_TYPES[kind], from_pandas=True)))
            elif kind == "date":
                arrays.append(pa.array(col.to_numpy(dtype="datetime64[s]")).cast(pa.date32()))
            elif kind == "datetime":
                arrays.append(pa.Array.from_pandas(col).cast(_ARROW_TYPES[kind]))
            else:
                values = col.to_numpy(dtype=np.float64, na_value=np.nan)
                arr = pa.array(values, from_pandas=True)
                arrays.append(arr.cast(pa.int64()) if kind == "int" else arr)
        return pa.Table.from_arrays(arrays, names=["_row", *(n for n, _ in self.columns)])

    def write(self, frame: pd.DataFrame) -> None:
        """Stage a chunk of accepted rows (a direct load: into the table itself)."""
        if frame.empty:
            return
        self.staged += len(frame)
        table = self._arrow(frame)
        names = ", ".join(self.q(n) for n in table.column_names)
        if self.pg:
            if self.direct:
                if self.totals is not None:
                    self.totals.add(frame)
                table = table.select(self.insert_cols)
            if self._copy is None:
                target = self.table.name if self.direct else self.stage
                self._copy = CopyStream(self.conn, target, self.table)
            self._copy.write(table)
            return
        lists = []
        kinds = ["int", *(kind for _, kind in self.columns)]
        for kind, col in zip(kinds, table.columns, strict=True):
            if kind == "date":
                col = col.cast(pa.string())
            elif kind == "datetime":
                # SQLAlchemy's SQLite DateTime text format, in UTC.
                col = pc.strftime(col, format="%Y-%m-%d %H:%M:%S")
            lists.append(col.to_pylist())
        marks = ", ".join("?" for _ in lists)
        cursor = self.conn.connection.cursor()
        try:
            # An iterator: sqlite3 takes one, and the chunk's tuples never exist all at once.
            rows = cast(Any, zip(*lists, strict=True))
            cursor.executemany(f"INSERT INTO {self.stage} ({names}) VALUES ({marks})", rows)
        finally:
            cursor.close()

    def finish_staging(self) -> None:
        """End the file's COPY (waiting for the server to take every row) before querying."""
        if self._copy is not None:
            copy, self._copy = self._copy, None
            copy.finish()

    def drop(self, duplicates: pd.DataFrame) -> None:
        """Take the rows of duplicated keys back out of what the file staged."""
        if duplicates.empty:
            return
        if self.direct:
            self._drop_keys(duplicates[list(self.ent.key)].drop_duplicates())
            if self.totals is not None:
                self.totals.valid = False  # they counted rows that are gone again
            return
        rows = duplicates["_row"].to_numpy(dtype=np.int64)
        for lo in range(0, len(rows), _IN_BATCH):
            batch = ", ".join(str(int(r)) for r in rows[lo : lo + _IN_BATCH])
            self.conn.exec_driver_sql(f"DELETE FROM {self.stage} WHERE _row IN ({batch})")

    def _drop_keys(self, keys: pd.DataFrame) -> None:
        """Delete a direct load's rows with these keys (the table held no others)."""
        if keys.empty:
            return
        names = list(keys.columns)
        types = ", ".join(
            f"{self.q(n)} {self.table.c[n].type.compile(dialect=self.conn.dialect)}" for n in names
        )
        self.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE _dup_keys ({types}) ON COMMIT DROP")
        self.conn.exec_driver_sql(
            f"INSERT INTO _dup_keys VALUES ({', '.join('%s' for _ in names)})",
            [
                tuple(v.item() if isinstance(v, np.generic) else v for v in row)
                for row in keys.itertuples(index=False)
            ],
        )
        match = " AND ".join(f"t.{self.q(n)} = d.{self.q(n)}" for n in names)
        self.conn.exec_driver_sql(
            f"DELETE FROM {self.table.name} t USING _dup_keys d WHERE {match}"
        )

    def differs(self, column: str) -> str:
        """SQL: the upsert's new value of ``column`` differs from the stored one (t)."""
        old, new = f"t.{self.q(column)}", f"excluded.{self.q(column)}"
        if not self.pg:
            return f"{old} IS NOT {new}"
        if column == "attributes":  # json has no equality operator
            return f"{old}::text IS DISTINCT FROM {new}::text"
        return f"{old} IS DISTINCT FROM {new}"

    def merge(self) -> None:
        """Upsert the staged rows into the target, then what depends on them."""
        if self.direct:
            self._finish_direct()
            return
        if self.pg and not self.spec.few_rows:
            self.conn.exec_driver_sql(f"ANALYZE {self.stage}")
        for step in self.spec.before_upsert:
            step(self)
        cols = list(self.insert_cols)
        exprs = [self.q(c) for c in cols]
        updates = list(self.update_cols)
        for name, value in self.spec.constants.items():
            cols.append(name)
            exprs.append(value)
            updates.append(name)
        sets = [f"{self.q(c)} = excluded.{self.q(c)}" for c in updates]
        changed = " OR ".join(self.differs(c) for c in updates)
        replaces = self.spec.replaces_row_when
        if replaces is not None:
            # The columns the file lacks: the insert's values (defaults) where the stored row is
            # replaced whole, the stored ones elsewhere.
            rest = [
                c.name
                for c in self.table.columns
                if c.name not in (*updates, *self.ent.key, *self.spec.stamped)
            ]
            sets += [
                f"{self.q(c)} = CASE WHEN {replaces} THEN excluded.{self.q(c)} "
                f"ELSE t.{self.q(c)} END"
                for c in rest
            ]
            changed = f"{changed} OR ({replaces})" if changed else f"({replaces})"
        if sets:
            sets += [f"{c} = CURRENT_TIMESTAMP" for c in self.spec.stamped]
        action = f"DO UPDATE SET {', '.join(sets)} WHERE {changed}" if sets else "DO NOTHING"
        order = list(self.spec.merge_order or self.ent.key)
        if (
            self.pg
            and self.spec.bulk_append
            and worth_rebuilding(self.conn, self.table.name, self.staged)
        ):
            self._bulk_insert(cols, exprs, updates)
        else:
            self.conn.exec_driver_sql(
                f"INSERT INTO {self.table.name} AS t ({', '.join(self.q(c) for c in cols)}) "
                f"SELECT {', '.join(exprs)} FROM {self.stage} WHERE true "
                f"ORDER BY {', '.join(self.q(c) for c in order)} "
                f"ON CONFLICT ({', '.join(self.q(k) for k in self.ent.key)}) {action}"
            )
        if self.pg and self.spec.analyze_after and self.staged >= ANALYZE_ROWS:
            # A big load changes the table's shape: plan what follows with fresh statistics.
            self.conn.exec_driver_sql(f"ANALYZE {self.table.name}")
        for step in (*self.spec.derive, *self.spec.after_load):
            step(self)

    def _finish_direct(self) -> None:
        """Derived tables from the copied rows (all of the table's), then the indexes."""
        for step in self.spec.derive:
            step(self)
        build_indexes(self.conn, self.table)
        if self.staged >= ANALYZE_ROWS:
            self.conn.exec_driver_sql(f"ANALYZE {self.table.name}")
        for step in self.spec.after_load:
            step(self)

    def _bulk_insert(self, cols: list[str], exprs: list[str], updates: list[str]) -> None:
        """Update changed rows, drop the indexes, append the new rows, build the indexes again
        (one sort per index instead of inserting every row into it)."""
        table, key = self.table, list(self.ent.key)
        match = " AND ".join(f"t.{self.q(k)} = s.{self.q(k)}" for k in key)
        # The file's rows already stored, if a before_upsert step collected them.
        stored = self.spec.stored_keys or table.name
        known = " AND ".join(f"m.{self.q(k)} = s.{self.q(k)}" for k in key)
        if updates:
            sets = ", ".join(f"{self.q(c)} = s.{self.q(c)}" for c in updates)
            changed = " OR ".join(f"t.{self.q(c)} IS DISTINCT FROM s.{self.q(c)}" for c in updates)
            source = f"{self.stage} s"
            if stored != table.name:  # only the file's stored rows can change
                source = f"(SELECT s.* FROM {self.stage} s JOIN {stored} m ON {known}) s"
            self.conn.exec_driver_sql(
                f"UPDATE {table.name} AS t SET {sets} FROM {source} WHERE {match} AND ({changed})"
            )
        drop_indexes(self.conn, table)
        self.conn.exec_driver_sql(
            f"INSERT INTO {table.name} ({', '.join(self.q(c) for c in cols)}) "
            f"SELECT {', '.join(f's.{e}' for e in exprs)} FROM {self.stage} s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {stored} m WHERE {known})"
        )
        build_indexes(self.conn, table)

    def log(self, report: IngestReport, started_at: datetime) -> None:
        """The ingestion_log row, in the load's transaction (it commits with the rows)."""
        log_in(self.conn, report, started_at)
