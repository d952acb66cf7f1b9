"""How each entity loads beyond validate, stage and upsert: one declaration per entity.

Adding an ingest entity: its columns in featurestore.schema.ENTITIES (validation rules and
defaults in featurestore.validate if it has any), its table, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from featurestore.ingest import derived
from featurestore.schema import Kind

if TYPE_CHECKING:
    from featurestore.ingest.store import Store

Step = Callable[["Store"], None]


class Totals(Protocol):
    """Sums a direct load keeps of its rows as they stream (for its derive steps)."""

    valid: bool  # False once rows it counted were taken out again

    def add(self, frame: pd.DataFrame) -> None: ...


@dataclass(frozen=True)
class IngestEntity:
    """One entity's ingestion specifics; the defaults are a plain validated upsert."""

    # Source columns the entity does not know are kept (as attributes) instead of ignored.
    keep_extras: bool = False
    # Every sku must be a known product (products are that list themselves).
    check_skus: bool = True
    # Columns validation derives and the stage carries besides the entity's own.
    computed: tuple[tuple[str, Kind], ...] = ()
    # Columns validation decides for every row, so a load updates them even when its source
    # lacks them (otherwise an absent column leaves stored values alone).
    always_set: tuple[str, ...] = ()
    # Values the upsert writes into every row (SQL expressions), overwriting stored ones.
    constants: Mapping[str, str] = field(default_factory=dict)
    # Columns set to CURRENT_TIMESTAMP when the upsert changes a stored row.
    stamped: tuple[str, ...] = ()
    # SQL on the stored row (t): when true the upsert replaces the whole row, the columns the
    # file lacks taking their defaults, instead of only the file's columns.
    replaces_row_when: str | None = None
    # Insert order (default: the key): rows in index order keep each index's hot pages few.
    merge_order: tuple[str, ...] = ()
    # PostgreSQL: a big load re-analyses the table, so that later steps plan with its new shape.
    analyze_after: bool = False
    # PostgreSQL: a file of a large share of the table's rows is appended with the indexes
    # dropped and rebuilt; ``stored_keys`` names a before_upsert table of the file's stored keys.
    bulk_append: bool = False
    stored_keys: str | None = None
    # PostgreSQL: the first file into an empty table is copied into the table itself (no stage,
    # no upsert), ``totals`` summing what its derive steps need while the rows stream.
    direct_first_load: bool = False
    totals: Callable[[], Totals] | None = None
    # Steps in the load's transaction: on the stage before the upsert, then derived tables,
    # then what depends on those.
    before_upsert: tuple[Step, ...] = ()
    derive: tuple[Step, ...] = ()
    after_load: tuple[Step, ...] = ()
    # PostgreSQL: a pushed batch, a few rows with other batches beside it. Its statements reach
    # the tables' rows through their indexes (nested loops only: what the planner picks for big
    # tables anyway, where a hash join would read the whole table for a few rows), without
    # ANALYZE of the temporary tables nor the big loads' memory settings.
    few_rows: bool = False
    # Other entities whose loads change what this one's rows made (a repeat check names them).
    overlaps: tuple[str, ...] = ()
    # Temporary tables its steps make (dropped at the end on SQLite, whose connections are pooled).
    temp_tables: tuple[str, ...] = ()


INGEST_ENTITIES: dict[str, IngestEntity] = {
    "products": IngestEntity(keep_extras=True, check_skus=False, stamped=("updated_at",)),
    "orders": IngestEntity(
        computed=(("sale_date", "date"),),
        # cancellations and free lines are told by quantity and price, whatever the status column
        always_set=("status",),
        # by day: one spot per SKU in the sku index and one time-ordered run of order ids
        merge_order=("sale_date", "sku", "order_id", "line"),
        analyze_after=True,
        bulk_append=True,
        stored_keys=derived.MATCHED_LINES,
        direct_first_load=True,
        totals=derived.DailyTotals,
        before_upsert=(derived.collect_affected_days,),
        derive=(derived.derive_daily_sales,),
        after_load=(derived.direct_days_kept, derived.sale_dates_of_touched_days),
        overlaps=("sales",),
        temp_tables=(derived.AFFECTED_DAYS, derived.MATCHED_LINES),
    ),
    "sales": IngestEntity(
        constants={"source": "'direct'"},
        # A day's direct total is authoritative: it replaces an order-derived row whole.
        replaces_row_when=f"t.source <> '{derived.DIRECT}'",
        analyze_after=True,
        before_upsert=(derived.order_days_replaced,),
        after_load=(derived.sale_dates_of_stage,),
        overlaps=("orders",),
    ),
    "prices": IngestEntity(),
    "promotions": IngestEntity(),
    "events": IngestEntity(),
}
