"""Orders pushed through the API: one validated transaction, then the touched SKUs move on.

The lines go through featurestore.ingest.push_lines (the file path's rules and upsert); the SKUs
whose daily sales changed are dropped from this worker's forecast cache and serving window at
once, and other workers learn of them at their next data-token check (app/services/history.py).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from sqlalchemy import Engine

from app.errors import InvalidLines, InvalidRequest, PayloadTooLarge
from app.observability import ORDER_LINES
from app.schemas import LineRejectBody, OrdersResponse, OrderValue
from app.services.forecasting import ForecastService
from featurestore.data_versions import Version
from featurestore.ingest import IngestError, RejectedLines, TooManyLines, push_lines
from featurestore.pseudonyms import CustomerKeyMissing

# Pushes a worker runs at once; the others wait their turn in the thread pool. A push is mostly
# Python holding the GIL (validation, statements): more of them side by side add no throughput
# and starve the forecasts computed beside them (docs/benchmarks.md, pushed orders).
PUSH_SLOTS = threading.BoundedSemaphore(1)


def push_orders(
    engine: Engine,
    forecasts: ForecastService | None,
    lines: Sequence[Mapping[str, OrderValue]],
    *,
    partial: bool = False,
) -> OrdersResponse:
    """Store a batch of order lines (all or nothing unless ``partial``) and say what it did."""
    try:
        with PUSH_SLOTS:
            report = push_lines(engine, "orders", lines, partial=partial)
    except RejectedLines as exc:
        ORDER_LINES.labels("rejected").inc(len(exc.rejects))
        refused = [{"index": r.index, "column": r.column, "reason": r.reason} for r in exc.rejects]
        raise InvalidLines(str(exc), refused) from exc
    except TooManyLines as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except (CustomerKeyMissing, IngestError) as exc:
        raise InvalidRequest(str(exc)) from exc
    if forecasts is not None and report.changed and report.changed_at is not None:
        at = report.changed_at
        forecasts.history.note_push({s: Version(v, at) for s, v in report.changed.items()})
    for outcome in ("inserted", "unchanged", "updated"):
        ORDER_LINES.labels(outcome).inc(getattr(report, outcome))
    ORDER_LINES.labels("rejected").inc(len(report.rejected))
    return OrdersResponse(
        received=report.received,
        inserted=report.inserted,
        unchanged=report.unchanged,
        updated=report.updated,
        rejected=[
            LineRejectBody(index=r.index, column=r.column, reason=r.reason) for r in report.rejected
        ],
        skus_changed=sorted(report.changed),
    )
