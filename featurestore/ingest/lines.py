"""Lines pushed one batch at a time (``POST /v1/orders``): the file path's rules, one transaction.

A batch is validated by the same ``check_chunk`` as a file (its values as text, as a CSV cell
would hold them, so a JSON number and a CSV cell obey the same rule), duplicate keys are found by
the same ``KeyIndex``, and the accepted lines are staged and upserted by the same ``Store`` with
the entity's steps (daily sales derived in the transaction). What differs from a file:

- rejects come back with the batch (``index`` from 0, column, reason) instead of a reject file,
  and any reject stores nothing unless ``partial`` keeps the good lines;
- nothing is written to ingestion_log, whose newest load is the store's data token (every file
  load drops every cached forecast): a push bumps ``sku_data_versions`` of the SKUs whose
  order-derived daily sales it touched instead, in the same transaction, so that serving drops
  those SKUs' forecasts only (app/services/history.py reads the table);
- the SKU check asks only for the batch's SKUs, and the bulk paths of big files (first load
  copied in, indexes rebuilt) are off: a batch is small and other batches run beside it; its
  statements reach the tables through their indexes (``IngestEntity.few_rows``);
- batches pushed at about the same time may be validated and stored together
  (``push_batches``), each with the outcome it would have alone; on PostgreSQL one push
  transaction runs at a time across processes.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt
import pandas as pd
from sqlalchemy import Connection, Engine, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from featurestore.config import get_settings
from featurestore.ingest import derived
from featurestore.ingest.derived import AFFECTED_DAYS, DIRECT, as_daily_sku
from featurestore.ingest.entities import INGEST_ENTITIES
from featurestore.ingest.keys import duplicate_rejects
from featurestore.ingest.report import IngestError
from featurestore.ingest.store import Store
from featurestore.pseudonyms import Pseudonymiser
from featurestore.schema import ENTITIES, Entity
from featurestore.tables import Base, SkuDataVersion
from featurestore.validate import Context, check_chunk, resolve_columns

MAX_LINES = 10_000
# PostgreSQL: a batch that lost a deadlock (two batches updating the same days in another
# order) or a serialisation conflict is tried again, whole, this many times.
_RETRIES = 3
_RETRY_STATES = ("40P01", "40001")
_IN_BATCH = 900  # bound parameters per statement (below SQLite's limit)
# pg_advisory_xact_lock key of pushes (any bigint no other code takes: "salesfc push")
_PUSH_LOCK = 0x73616C6573666370

JsonScalar = str | int | float | bool | None
_T = TypeVar("_T")


@dataclass(frozen=True)
class LineReject:
    """Why one line of a batch was refused: its position (from 0), the column and the reason."""

    index: int
    column: str
    reason: str


@dataclass
class PushReport:
    """What a batch did: lines received, and of the stored ones how many were new or changed."""

    received: int
    inserted: int = 0
    unchanged: int = 0
    updated: int = 0
    rejected: list[LineReject] = field(default_factory=list)
    # SKUs whose order-derived daily sales the batch may have changed, with their new version.
    changed: dict[str, int] = field(default_factory=dict)
    changed_at: dt.datetime | None = None


class TooManyLines(IngestError):
    """A batch above MAX_LINES."""


class RejectedLines(IngestError):
    """Lines failed validation and ``partial`` was not asked for: nothing was stored."""

    def __init__(self, rejects: list[LineReject], received: int) -> None:
        super().__init__(
            f"{len(rejects):,} of {received:,} line(s) refused; nothing stored "
            "(fix them, or send ?partial=true to store the good lines)"
        )
        self.rejects = rejects
        self.received = received

    def __reduce__(self) -> tuple[type[RejectedLines], tuple[list[LineReject], int]]:
        return (RejectedLines, (self.rejects, self.received))  # from the push process


@dataclass(frozen=True)
class Batch:
    """One pushed batch: its lines, and whether its good lines are kept when others are not."""

    lines: Sequence[Mapping[str, JsonScalar]]
    partial: bool = False


# What push_batches says of each batch: its report, or why it stored nothing.
Outcome = PushReport | Exception


def push_lines(
    engine: Engine,
    entity: str,
    lines: Sequence[Mapping[str, JsonScalar]],
    *,
    partial: bool = False,
) -> PushReport:
    """Validate and store one batch of ``entity`` lines in one transaction (module docstring)."""
    (outcome,) = push_batches(engine, entity, [Batch(lines, partial)])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def push_batches(engine: Engine, entity: str, batches: Sequence[Batch]) -> list[Outcome]:
    """Several batches for about the cost of one, each with the outcome it would have alone.

    The batches are validated together (one ``check_chunk``) and stored in one transaction:
    what they share is a push's fixed cost (validation's per-call cost, the stage, the
    statements, the commit), which is most of a small batch's (docs/benchmarks.md, pushed
    orders). Each batch keeps its own rejects (index from 0 in the batch), all or nothing
    unless its ``partial``, its own counts, and the daily sales derived from its lines in the
    transaction that stores them. As if pushed one after the other in the order given:

    - batches naming different fields go to separate transactions (a field a batch leaves out
      keeps its stored value on update, as with that batch alone);
    - a batch holding a key that an earlier batch also holds goes to a later transaction,
      validated again there, so that the two apply one after the other;
    - a batch's ``changed`` lists the SKUs it touched whose data version its transaction moved
      (another batch of the transaction on the same SKU moved it once for both);
    - a batch refused whole (customer ids without a key) is refused alone: the others are
      pushed again without it;
    - a database error fails every batch of its transaction, none of which is then stored; a
      deadlock or serialisation conflict retries the transaction whole, as for one batch.
    """
    if entity not in INGEST_ENTITIES or "sku" not in {c.name for c in ENTITIES[entity].columns}:
        raise IngestError(f"lines cannot be pushed for {entity!r}")
    ent = ENTITIES[entity]
    outcomes: dict[int, Outcome] = {}
    by_fields: dict[tuple[str, ...], list[int]] = {}
    for i, batch in enumerate(batches):
        try:
            names = _fields(ent, batch.lines)
        except IngestError as exc:
            outcomes[i] = exc
            continue
        if not batch.lines:
            outcomes[i] = PushReport(received=0)
            continue
        by_fields.setdefault(tuple(names), []).append(i)
    for fields, members in by_fields.items():
        rounds = [members]
        while rounds:
            group = rounds.pop(0)
            try:
                done, later = _with_retries(
                    functools.partial(_push, engine, ent, list(fields), [batches[i] for i in group])
                )
            except (IngestError, ValueError) as exc:  # a batch refused whole
                if len(group) == 1:
                    outcomes[group[0]] = exc
                else:  # which one: each alone, in order
                    rounds = [[i] for i in group] + rounds
                continue
            except Exception as exc:  # the database: every batch of the transaction
                outcomes.update({i: exc for i in group})
                continue
            outcomes.update({group[k]: outcome for k, outcome in done.items()})
            if later:
                rounds.insert(0, [group[k] for k in later])
    return [outcomes[i] for i in range(len(batches))]


def _with_retries(run: Callable[[], _T]) -> _T:
    """``run`` (one transaction), tried again whole after a deadlock or serialisation conflict."""
    for attempt in range(_RETRIES + 1):
        try:
            return run()
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if attempt == _RETRIES or state not in _RETRY_STATES:
                raise
    raise AssertionError("unreachable")


def _fields(ent: Entity, lines: Sequence[Mapping[str, JsonScalar]]) -> list[str]:
    """The columns a batch is read with; IngestError for a batch refused whole."""
    if len(lines) > MAX_LINES:
        raise TooManyLines(f"{len(lines):,} lines in one batch; at most {MAX_LINES:,}")
    known = {c.name for c in ent.columns}
    seen = {name for line in lines for name in line}
    unknown = sorted(seen - known)
    if unknown:
        raise IngestError(
            f"unknown field(s) {', '.join(unknown[:10])}; the fields are {', '.join(sorted(known))}"
        )
    # Required columns always (a line lacking one is refused as "missing value"), the key too.
    return [c.name for c in ent.columns if c.required or c.name in seen or c.name in ent.key]


def _push(
    engine: Engine, ent: Entity, names: list[str], batches: Sequence[Batch]
) -> tuple[dict[int, Outcome], list[int]]:
    """One transaction for ``batches`` (same fields): the outcomes of those it settles, and the
    batches left for a later one (they hold a key an earlier batch holds)."""
    # A batch is small and shares the table with other batches: no bulk path of big files.
    spec = dataclasses.replace(
        INGEST_ENTITIES[ent.name],
        direct_first_load=False,
        bulk_append=False,
        analyze_after=False,
        few_rows=True,
    )
    if ent.name == "orders":
        # First and last sale days moved by the batch's days, not recomputed over all history.
        spec = dataclasses.replace(spec, after_load=(derived.direct_days_kept, _sale_dates))
    plan = resolve_columns(ent, names)
    frame = pd.DataFrame(
        {n: [_as_text(line.get(n)) for b in batches for line in b.lines] for n in names},
        dtype=object,
    )
    # Line i of batch b is row starts[b] + i + 1 of the frame.
    starts = [0, *itertools.accumulate(len(b.lines) for b in batches)]
    reports = [PushReport(received=len(b.lines)) for b in batches]
    done: dict[int, Outcome] = {}
    settings = get_settings()
    with engine.begin() as conn, _one_at_a_time(conn), Store(conn, ent, spec, plan, []) as store:
        ctx = Context(
            today=dt.datetime.now(ZoneInfo(settings.timezone)).date(),
            timezone=settings.timezone,
            known_skus=_known_skus(conn, frame["sku"]),
            present=plan.present,
            pseudonyms=Pseudonymiser.from_settings(settings),
        )
        batch_of = np.repeat(np.arange(len(batches)), [len(b.lines) for b in batches])
        accepted, rejects = check(ent, frame, ctx, batch_of)
        keep = np.ones(len(accepted), dtype=bool)
        accepted_batch = batch_of[accepted["_row"].to_numpy(dtype=np.int64) - 1]
        for b, batch in enumerate(batches):
            mine = [
                LineReject(r.index - starts[b], r.column, r.reason)
                for r in rejects
                if starts[b] <= r.index < starts[b + 1]
            ]
            reports[b].rejected = mine
            if mine and not batch.partial:
                done[b] = RejectedLines(mine, len(batch.lines))
                keep &= accepted_batch != b
        later = _held_earlier(ent, accepted, accepted_batch, keep) if len(batches) > 1 else []
        for b in later:
            keep &= accepted_batch != b
        settled = [b for b in range(len(batches)) if b not in done and b not in later]
        done.update({b: reports[b] for b in settled})
        if not keep.any():
            return done, later
        if not keep.all():
            accepted = accepted[keep].reset_index(drop=True)
        store.write(accepted)
        store.finish_staging()
        touched: dict[int, set[str]] = {b: set() for b in settled}
        stored = collections.Counter(accepted_batch[keep].tolist())
        for row, new_sku, old_sku, differ in _compare(store):
            b = int(batch_of[row - 1])
            report = reports[b]
            if old_sku is None:
                touched[b].add(new_sku)
                continue
            report.unchanged += 1
            if differ:
                report.unchanged -= 1
                report.updated += 1
                touched[b].update((new_sku, old_sku))
        for b in settled:
            report = reports[b]
            report.inserted = stored[b] - report.unchanged - report.updated
        if any(reports[b].inserted or reports[b].updated for b in settled):
            store.merge()
            now = dt.datetime.now(dt.UTC)
            moved = _bump_versions(store, sorted(set().union(*touched.values())), now)
            for b in settled:
                if reports[b].inserted or reports[b].updated:
                    reports[b].changed_at = now
                    reports[b].changed = {s: v for s, v in moved.items() if s in touched[b]}
    return done, later


@contextlib.contextmanager
def _one_at_a_time(conn: Connection) -> Iterator[None]:
    """PostgreSQL: one push transaction at a time across processes (serving workers).

    Each worker stores one group at a time already (app.services.orders.PushQueue); two workers'
    groups side by side on 2 cores starved the forecasts computed beside them (forecast p99 5.4x
    its figure without writes, against 1.3-1.9x with one group at a time; docs/benchmarks.md,
    pushed orders). A transaction-level advisory lock, released at commit or rollback; SQLite
    writes one transaction at a time anyway.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PUSH_LOCK})")
    yield


def _held_earlier(
    ent: Entity,
    accepted: pd.DataFrame,
    batch_of: npt.NDArray[np.int64],
    keep: npt.NDArray[np.bool_],
) -> list[int]:
    """Batches holding a key that an earlier batch (stored now or later) also holds."""
    claimed: dict[tuple[object, ...], int] = {}
    later: set[int] = set()
    keys = zip(*(accepted[k].tolist() for k in ent.key), strict=True)
    for key, b, kept in zip(keys, batch_of.tolist(), keep.tolist(), strict=True):
        if not kept:
            continue
        # Rows come in batch order: a key first held by an earlier batch, deferred or not,
        # defers this one (so a batch after a deferred one on a shared key waits too).
        if claimed.setdefault(key, b) != b:
            later.add(b)
    return sorted(later)


def check(
    ent: Entity,
    frame: pd.DataFrame,
    ctx: Context,
    batch_of: npt.NDArray[np.int64] | None = None,
) -> tuple[pd.DataFrame, list[LineReject]]:
    """The accepted lines (typed, ``_row`` from 1) and every refused line's first reason; with
    ``batch_of`` (each row's batch), a key held twice only within one batch is a duplicate."""
    rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    checked = check_chunk(ent, frame, rows, ctx)
    duplicates = _duplicates(ent, checked.frame, batch_of)
    rejects = [checked.rejects]
    accepted = checked.frame
    if not duplicates.empty:
        rejects.append(duplicate_rejects(duplicates, ent))
        accepted = accepted[~accepted["_row"].isin(duplicates["_row"])].reset_index(drop=True)
    rejects = [r for r in rejects if not r.empty]
    if not rejects:
        return accepted, []
    found = pd.concat(rejects).sort_values("row", kind="stable").drop_duplicates("row")
    refused = [
        LineReject(int(row) - 1, str(column), str(reason))
        for row, column, reason in zip(found["row"], found["column"], found["reason"], strict=True)
    ]
    return accepted, refused


def _duplicates(
    ent: Entity, frame: pd.DataFrame, batch_of: npt.NDArray[np.int64] | None
) -> pd.DataFrame:
    """``_row`` and key of every row whose key another row of its batch also has, in
    KeyIndex.duplicates' form (days as seconds since the epoch), by ``_row``."""
    key = list(ent.key)
    row = frame["_row"].to_numpy(dtype=np.int64)
    # A batch's lines are few: their keys as tuples in a Counter first, a frame only for the
    # rows of repeated keys (building and sorting frames cost more than the search).
    columns = [frame[name].tolist() for name in key]
    if batch_of is not None:
        columns.insert(0, batch_of[row - 1].tolist())
    tuples = list(zip(*columns, strict=True))
    counts = collections.Counter(tuples)
    repeated = np.fromiter((counts[t] > 1 for t in tuples), dtype=bool, count=len(tuples))
    frame = frame.loc[repeated]
    parts: dict[str, Any] = {"_row": row[repeated]}
    for name in key:
        col = frame[name]
        if pd.api.types.is_datetime64_any_dtype(col.dtype):
            col = col.astype("datetime64[s]").astype("int64")
        parts[name] = col.to_numpy()
    return pd.DataFrame(parts).sort_values("_row").reset_index(drop=True)


def _as_text(value: JsonScalar) -> str | None:
    """A JSON value as a CSV cell would hold it (None stays missing)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return str(value)


def _known_skus(conn: Connection, skus: pd.Series) -> pd.Index:
    """The batch's SKUs that are products (one indexed look-up, not the whole catalogue)."""
    wanted = sorted({s for s in skus.tolist() if isinstance(s, str)})
    found: list[str] = []
    for lo in range(0, len(wanted), _IN_BATCH):
        part = wanted[lo : lo + _IN_BATCH]
        marks = ", ".join(f":s{i}" for i in range(len(part)))
        found += (
            conn.execute(
                text(f"SELECT sku FROM products WHERE sku IN ({marks})"),
                {f"s{i}": s for i, s in enumerate(part)},
            )
            .scalars()
            .all()
        )
    return pd.Index(found, dtype="str")


def _compare(store: Store) -> list[tuple[int, str, str | None, bool]]:
    """Each staged line: its ``_row``, its SKU, the stored line's SKU (None: a new line) and
    whether the stored line differs in a column the upsert sets."""
    if store.pg:
        differs = [f"t.{store.q(c)} IS DISTINCT FROM s.{store.q(c)}" for c in store.update_cols]
    else:
        differs = [f"t.{store.q(c)} IS NOT s.{store.q(c)}" for c in store.update_cols]
    changed = " OR ".join(differs) or "false"
    key = " AND ".join(f"t.{store.q(k)} = s.{store.q(k)}" for k in store.ent.key)
    rows = store.conn.exec_driver_sql(
        f"SELECT s._row, s.sku, t.sku, CASE WHEN {changed} THEN 1 ELSE 0 END "
        f"FROM {store.stage} s LEFT JOIN {store.table.name} t ON {key}"
    ).all()
    return [(int(row), new, old, bool(differ)) for row, new, old, differ in rows]


def _sale_dates(store: Store) -> None:
    """first_sale_date and last_sale_date after a batch, from its days alone: a day with units
    widens the SKU's range; a first or last sale day left with none (a cancellation) sends its
    SKU's range through a full recompute (a seek per such SKU)."""
    sku = as_daily_sku(store, "a.sku")
    days = f"FROM {AFFECTED_DAYS} a JOIN daily_sales d ON d.sku = {sku} AND d.date = a.sale_date"
    store.conn.exec_driver_sql(
        "UPDATE products SET "
        "first_sale_date = CASE WHEN first_sale_date IS NULL OR s.first_day < first_sale_date "
        "THEN s.first_day ELSE first_sale_date END, "
        "last_sale_date = CASE WHEN last_sale_date IS NULL OR s.last_day > last_sale_date "
        "THEN s.last_day ELSE last_sale_date END "
        f"FROM (SELECT {sku} AS sku, MIN(a.sale_date) AS first_day, MAX(a.sale_date) AS last_day "
        f"{days} WHERE d.units > 0 GROUP BY {sku}) s "
        "WHERE products.sku = s.sku AND (first_sale_date IS NULL OR last_sale_date IS NULL "
        "OR s.first_day < first_sale_date OR s.last_day > last_sale_date)"
    )
    lost = (
        store.conn.exec_driver_sql(
            f"SELECT DISTINCT {sku} {days} JOIN products p ON p.sku = {sku} "
            "WHERE d.units = 0 "
            "AND (a.sale_date = p.first_sale_date OR a.sale_date = p.last_sale_date)"
        )
        .scalars()
        .all()
    )
    for lo in range(0, len(lost), _IN_BATCH):
        part = lost[lo : lo + _IN_BATCH]
        marks = ", ".join(f":s{i}" for i in range(len(part)))
        known = "FROM daily_sales d WHERE d.sku = products.sku AND d.units > 0"
        store.conn.execute(
            text(
                f"UPDATE products SET first_sale_date = (SELECT MIN(d.date) {known}), "
                f"last_sale_date = (SELECT MAX(d.date) {known}) WHERE sku IN ({marks})"
            ),
            {f"s{i}": v for i, v in enumerate(part)},
        )


def _bump_versions(store: Store, touched: list[str], now: dt.datetime) -> dict[str, int]:
    """A new data version for every SKU whose order-derived daily sales the batch touched.

    Days kept from a directly loaded daily total (the file path's rule) did not change: their
    SKUs keep their version and their cached forecasts. Sorted, so that concurrent batches lock
    the rows in one order.
    """
    conn = store.conn
    derived = conn.exec_driver_sql(
        f"SELECT DISTINCT a.sku FROM {AFFECTED_DAYS} a JOIN daily_sales d "
        f"ON d.sku = {as_daily_sku(store, 'a.sku')} AND d.date = a.sale_date "
        f"WHERE d.source <> '{DIRECT}'"
    ).scalars()
    skus = sorted(set(touched) & set(derived))
    if not skus:
        return {}
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    table = Base.metadata.tables[SkuDataVersion.__tablename__]
    out: dict[str, int] = {}
    for lo in range(0, len(skus), _IN_BATCH):
        stmt = insert(table).values(
            [{"sku": s, "version": 1, "changed_at": now} for s in skus[lo : lo + _IN_BATCH]]
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=["sku"],
            set_={"version": table.c.version + 1, "changed_at": stmt.excluded.changed_at},
        ).returning(table.c.sku, table.c.version)
        out.update({str(s): int(v) for s, v in conn.execute(upsert)})
    return out
