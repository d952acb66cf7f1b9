"""What loads derive: daily sales from order lines, and products' first and last sale dates.

Order lines become daily_sales rows (source "orders"), recomputed from all stored lines of every
(sku, day) a file touches, the old day of a moved line included:

- sale_date: ordered_at as a day in settings.timezone (featurestore.validate derives it).
- units: quantity of lines with quantity > 0 and status completed or returned (a line returned
  later was still demand on its day); cancelled lines count for nothing.
- returned_units: |quantity| of returned lines (positive lines returned later, negative returns).
- revenue: quantity * unit_price * (1 - discount) summed over completed lines.
- avg_price: sum(quantity * unit_price * (1 - discount)) / sum(quantity) over priced completed
  and returned lines (revenue / units would price returned units at zero).

A day whose lines were all cancelled keeps a row with 0 units. first_sale_date and last_sale_date
of a touched SKU are its first and last day with units > 0.

Mixed sources, one rule per SKU-day whatever the order of the loads: a day's directly loaded
total (source "direct") is authoritative. Order lines for it are stored but not summed over it,
and a daily sales file replaces an order-derived row whole (the columns it lacks take their
defaults). Each load reports the days where the two met (report.MixedDays).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.ingest.bulk import (
    binary_type,
    build_indexes,
    copy_rows,
    drop_indexes,
    worth_rebuilding,
)
from featurestore.ingest.keys import flat
from featurestore.ingest.report import MixedDays
from featurestore.tables import Base

if TYPE_CHECKING:
    from featurestore.ingest.store import Store

# Temporary tables of an order load: the (sku, day) pairs it touches, and its stored lines.
AFFECTED_DAYS = "_affected_days"
MATCHED_LINES = "_matched_lines"
# daily_sales.source of directly loaded rows, which order lines never overwrite
DIRECT = "direct"


class DailyTotals:
    """Daily sales of a direct order load, summed chunk by chunk while the lines stream.

    The same definitions as the SQL of derive_daily_sales, with SQL's NULLs: a sum over no
    contributing line is NULL (revenue, average price) or 0 (units, returned units). Lines of
    every status make a day exist, so an all-cancelled day has 0 units.
    """

    COLUMNS = ("units", "revenue", "avg_price", "returned_units")
    # per (sku, day): units, revenue, lines with revenue, priced demand value, its units, lines
    # of priced demand, returned units
    _SUMS = 7
    _DAY_BIAS = 1 << 31  # days since 1970 as an unsigned 32-bit number, in a key's low half

    def __init__(self) -> None:
        self.skus: dict[str, int] = {}
        self.keys: list[np.ndarray] = []
        self.sums: list[np.ndarray] = []
        self.valid = True  # False once rows it counted were taken out again

    def add(self, frame: pd.DataFrame) -> None:
        if frame.empty:
            return
        encoded = pc.dictionary_encode(
            flat(pa.array(frame["sku"], type=pa.string(), from_pandas=True))
        )
        codes = np.array(
            [self.skus.setdefault(s, len(self.skus)) for s in encoded.dictionary.to_pylist()],
            dtype=np.int64,
        )[encoded.indices.to_numpy(zero_copy_only=False)]
        days = frame["sale_date"].to_numpy(dtype="datetime64[D]").astype(np.int64)
        uniq, where = np.unique((codes << 32) | (days + self._DAY_BIAS), return_inverse=True)
        q = frame["quantity"].to_numpy(dtype=np.float64, na_value=np.nan)
        price = frame["unit_price"].to_numpy(dtype=np.float64, na_value=np.nan)
        discount = frame["discount"].to_numpy(dtype=np.float64, na_value=np.nan)
        status = frame["status"]
        completed = (status == "completed").to_numpy(dtype=bool)
        returned = (status == "returned").to_numpy(dtype=bool)
        demand = (q > 0) & (completed | returned)
        value = q * price * (1 - discount)
        priced = ~np.isnan(value)
        sold = (q > 0) & completed & priced
        paid = demand & priced
        weights = (
            np.where(demand, q, 0.0),
            np.where(sold, value, 0.0),
            sold.astype(np.float64),
            np.where(paid, value, 0.0),
            np.where(paid, q, 0.0),
            paid.astype(np.float64),
            np.where(returned, np.abs(q), 0.0),
        )
        self.keys.append(uniq)
        self.sums.append(np.stack([np.bincount(where, w, len(uniq)) for w in weights], axis=1))

    def result(self) -> pa.Table:
        """One row per (sku, day), in SQL's terms (NULL where SQL's SUM finds nothing)."""
        keys = np.concatenate(self.keys) if self.keys else np.empty(0, dtype=np.int64)
        parts = np.concatenate(self.sums) if self.sums else np.empty((0, self._SUMS))
        self.keys, self.sums = [], []
        uniq, where = np.unique(keys, return_inverse=True)
        sums = [np.bincount(where, parts[:, i], len(uniq)) for i in range(self._SUMS)]
        units, revenue, revenue_n, paid, paid_units, paid_n, returned_units = sums
        has_price = (paid_n > 0) & (paid_units != 0)
        avg_price = np.where(has_price, paid / np.where(has_price, paid_units, 1.0), np.nan)
        names = np.array(list(self.skus), dtype=object)
        days = (uniq & 0xFFFFFFFF) - self._DAY_BIAS
        return pa.table(
            {
                "sku": pa.array(names[uniq >> 32] if len(uniq) else [], type=pa.string()),
                "sale_date": pa.array(days.astype(np.int32), type=pa.int32()).cast(pa.date32()),
                "units": pa.array(units),
                "revenue": pa.array(np.where(revenue_n > 0, revenue, np.nan), from_pandas=True),
                "avg_price": pa.array(avg_price, from_pandas=True),
                "returned_units": pa.array(returned_units),
            }
        )


def collect_affected_days(store: Store) -> None:
    """The (sku, day) pairs the file touches, and the old days of lines it moves.

    The file's lines that are already stored are found by one join (_matched_lines: key, old sku
    and day); the update and the append of new lines then work from that small table instead of
    joining the file with every stored line again.
    """
    conn, stage = store.conn, store.stage
    if store.pg:
        create = "CREATE TEMPORARY TABLE {} ON COMMIT DROP AS"
    else:
        for table in (AFFECTED_DAYS, MATCHED_LINES):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS temp.{table}")
        create = "CREATE TEMPORARY TABLE {} AS"
    conn.exec_driver_sql(
        f"{create.format(MATCHED_LINES)} SELECT s.order_id, s.line, o.sku AS old_sku, "
        "o.sale_date AS old_date, (o.sku <> s.sku OR o.sale_date <> s.sale_date) AS moved "
        f"FROM {stage} s JOIN order_lines o ON o.order_id = s.order_id AND o.line = s.line"
    )
    conn.exec_driver_sql(
        f"{create.format(AFFECTED_DAYS)} SELECT DISTINCT sku, sale_date FROM {stage}"
    )
    conn.exec_driver_sql(
        f"INSERT INTO {AFFECTED_DAYS} SELECT DISTINCT m.old_sku, m.old_date "
        f"FROM {MATCHED_LINES} m "
        f"WHERE m.moved AND NOT EXISTS (SELECT 1 FROM {AFFECTED_DAYS} a "
        "WHERE a.sku = m.old_sku AND a.sale_date = m.old_date)"
    )
    if store.pg and not store.spec.few_rows:
        conn.exec_driver_sql(f"ANALYZE {MATCHED_LINES}")
        conn.exec_driver_sql(f"ANALYZE {AFFECTED_DAYS}")


def derive_daily_sales(store: Store) -> None:
    """Daily sales of the touched days, from all their lines. After a direct load every line in
    order_lines is this file's, so all of them are aggregated into _affected_days."""
    conn = store.conn
    demand = "o.quantity > 0 AND o.status IN ('completed', 'returned')"
    value = "o.quantity * o.unit_price * (1 - o.discount)"
    sums = {
        "units": f"SUM(CASE WHEN {demand} THEN o.quantity END)",
        "revenue": f"SUM(CASE WHEN o.quantity > 0 AND o.status = 'completed' THEN {value} END)",
        "avg_price": f"SUM(CASE WHEN {demand} THEN {value} END) / NULLIF(SUM(CASE WHEN "
        f"{demand} AND o.unit_price IS NOT NULL THEN o.quantity END), 0)",
        "returned_units": "SUM(CASE WHEN o.status = 'returned' THEN ABS(o.quantity) END)",
    }
    aggregated = ", ".join(f"{expr} AS {name}" for name, expr in sums.items())
    where = "true"  # SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
    if store.direct:
        if isinstance(store.totals, DailyTotals) and store.totals.valid:
            days = _copy_daily_totals(store, store.totals)
        else:
            # One pass over the lines, no index needed: the days touched are those found.
            days = conn.exec_driver_sql(
                f"CREATE TEMPORARY TABLE {AFFECTED_DAYS} ON COMMIT DROP AS "
                f"SELECT o.sku, o.sale_date, {aggregated} FROM order_lines o "
                "GROUP BY o.sku, o.sale_date"
            ).rowcount
        if worth_rebuilding(conn, "daily_sales", days):
            _bulk_daily_sales(store, sums)
            return
        lines = ""
        values = {name: f"a.{name}" for name in sums}
        group = ""
    elif store.pg and store.spec.few_rows:
        # A pushed batch: each touched day's lines through ix_order_lines_sale_date_sku, and
        # not for days with a directly loaded total, which the upsert below leaves alone anyway.
        lines = "LEFT JOIN order_lines o ON o.sku = a.sku AND o.sale_date = a.sale_date"
        where = (
            "NOT EXISTS (SELECT 1 FROM daily_sales x WHERE "
            f"x.sku = {as_daily_sku(store, 'a.sku')} AND x.date = a.sale_date "
            f"AND x.source = '{DIRECT}')"
        )
        values = sums
        group = "GROUP BY a.sku, a.sale_date "
    elif store.pg:
        # Aggregate the touched days' lines first: PostgreSQL then hashes the days and scans
        # the lines once, instead of one index range scan per day.
        lines = (
            f"LEFT JOIN (SELECT o.sku, o.sale_date, {aggregated} FROM order_lines o "
            f"WHERE EXISTS (SELECT 1 FROM {AFFECTED_DAYS} x "
            "WHERE x.sku = o.sku AND x.sale_date = o.sale_date)"
            " GROUP BY o.sku, o.sale_date) g ON g.sku = a.sku AND g.sale_date = a.sale_date"
        )
        values = {name: f"g.{name}" for name in sums}
        group = ""
    else:
        # SQLite looks each touched day up in ix_order_lines_sale_date_sku.
        lines = "LEFT JOIN order_lines o ON o.sku = a.sku AND o.sale_date = a.sale_date"
        values = sums
        group = "GROUP BY a.sku, a.sale_date "
    columns = (
        f"COALESCE({values['units']}, 0), {values['revenue']}, {values['avg_price']}, "
        f"COALESCE({values['returned_units']}, 0)"
    )
    fields = ("units", "revenue", "avg_price", "returned_units", "source")
    sets = ", ".join(f"{f} = excluded.{f}" for f in fields)
    changed = " OR ".join(store.differs(f) for f in fields)
    conn.exec_driver_sql(
        "INSERT INTO daily_sales AS t "
        "(sku, date, units, revenue, avg_price, returned_units, on_promotion, source) "
        f"SELECT a.sku, a.sale_date, {columns}, false, 'orders' "
        f"FROM {AFFECTED_DAYS} a {lines} "
        f"WHERE {where} {group}ORDER BY a.sku, a.sale_date "
        f"ON CONFLICT (sku, date) DO UPDATE SET {sets} "
        f"WHERE t.source <> '{DIRECT}' AND ({changed})"
    )


def _copy_daily_totals(store: Store, daily: DailyTotals) -> int:
    """The client's per-day totals of a direct load into _affected_days; their count."""
    totals = daily.result()
    table = Base.metadata.tables["daily_sales"]
    types = {
        "sku": store.table.c["sku"].type,
        "sale_date": store.table.c["sale_date"].type,
        **{n: table.c[n].type for n in DailyTotals.COLUMNS},
    }
    cols = ", ".join(
        f"{store.q(n)} {t.compile(dialect=store.conn.dialect)}" for n, t in types.items()
    )
    store.conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {AFFECTED_DAYS} ({cols}) ON COMMIT DROP")
    if totals.num_rows:
        copy_rows(store.conn, AFFECTED_DAYS, totals, [binary_type(t) for t in types.values()])
    return int(totals.num_rows)


def _bulk_daily_sales(store: Store, sums: Mapping[str, str]) -> None:
    """_affected_days' aggregates into daily_sales with its indexes built again after: update
    the days it has, append the others (no per-row conflict check), index once."""
    conn = store.conn
    names = list(sums)
    values = [
        "COALESCE(a.units, 0)",
        "a.revenue",
        "a.avg_price",
        "COALESCE(a.returned_units, 0)",
    ]
    match = "t.sku = a.sku AND t.date = a.sale_date"
    sets = ", ".join(f"{n} = {v}" for n, v in zip(names, values, strict=True))
    changed = " OR ".join(f"t.{n} IS DISTINCT FROM {v}" for n, v in zip(names, values, strict=True))
    conn.exec_driver_sql(
        f"UPDATE daily_sales t SET {sets}, source = 'orders' FROM {AFFECTED_DAYS} a "
        f"WHERE {match} AND t.source <> '{DIRECT}' "
        f"AND ({changed} OR t.source IS DISTINCT FROM 'orders')"
    )
    daily = Base.metadata.tables["daily_sales"]
    drop_indexes(conn, daily)
    conn.exec_driver_sql(
        f"INSERT INTO daily_sales (sku, date, {', '.join(names)}, on_promotion, source) "
        f"SELECT a.sku, a.sale_date, {', '.join(values)}, false, 'orders' "
        f"FROM {AFFECTED_DAYS} a WHERE NOT EXISTS (SELECT 1 FROM daily_sales t WHERE {match})"
    )
    build_indexes(conn, daily)


def as_daily_sku(store: Store, column: str) -> str:
    """SQL: an order-side sku compared in daily_sales' (and products') collation.

    PostgreSQL: order_lines.sku (and the order stage) compare bytewise (COLLATE "C"), the
    daily_sales and products keys in the database's default: a join between the two with the
    implicit collation cannot use the daily_sales primary key and scans the whole table.
    """
    return f'{column} COLLATE "default"' if store.pg else column


def direct_days_kept(store: Store) -> None:
    """Order loads: the touched days whose directly loaded daily sales stayed as they were."""
    store.mixed = _mixed_days(
        store,
        "kept",
        f"FROM {AFFECTED_DAYS} a JOIN daily_sales d ON d.sku = {as_daily_sku(store, 'a.sku')} "
        f"AND d.date = a.sale_date WHERE d.source = '{DIRECT}'",
        "a.sku, a.sale_date",
    )


def order_days_replaced(store: Store) -> None:
    """Daily sales loads (before the upsert): the file's days that held order-derived rows."""
    store.mixed = _mixed_days(
        store,
        "replaced",
        f"FROM {store.stage} s JOIN daily_sales d ON d.sku = s.sku AND d.date = s.date "
        f"WHERE d.source <> '{DIRECT}'",
        "s.sku, s.date",
    )


def _mixed_days(store: Store, outcome: str, joined: str, key: str) -> MixedDays | None:
    """How many days ``joined`` finds, and the first MixedDays.SHOWN of them (None: none)."""
    rows = store.conn.exec_driver_sql(
        f"SELECT {key}, COUNT(*) OVER () {joined} ORDER BY {key} LIMIT {MixedDays.SHOWN}"
    ).all()
    if not rows:
        return None
    return MixedDays(outcome, int(rows[0][2]), [f"{sku} {day}" for sku, day, _ in rows])


def refresh_sale_dates(store: Store, touched: str) -> None:
    """first_sale_date and last_sale_date of the SKUs in table ``touched``."""
    # One aggregate over the touched SKUs' rows: a correlated MIN/MAX per product made
    # PostgreSQL scan daily_sales once per SKU while the fresh rows had no statistics.
    distinct = "IS DISTINCT FROM" if store.pg else "IS NOT"
    store.conn.exec_driver_sql(
        "UPDATE products SET first_sale_date = s.first_day, last_sale_date = s.last_day "
        "FROM (SELECT t.sku, MIN(d.date) AS first_day, MAX(d.date) AS last_day "
        f"FROM (SELECT DISTINCT {as_daily_sku(store, 'sku')} AS sku FROM {touched}) t "
        "LEFT JOIN daily_sales d ON d.sku = t.sku AND d.units > 0 GROUP BY t.sku) s "
        "WHERE products.sku = s.sku AND (products.first_sale_date "
        f"{distinct} s.first_day OR products.last_sale_date {distinct} s.last_day)"
    )


def sale_dates_of_touched_days(store: Store) -> None:
    """Order loads: the SKUs of every day the file touched (old days of moved lines too)."""
    refresh_sale_dates(store, AFFECTED_DAYS)


def sale_dates_of_stage(store: Store) -> None:
    """Daily sales loads: the SKUs the file holds."""
    refresh_sale_dates(store, store.stage)
