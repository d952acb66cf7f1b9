"""Orders pushed through the API: one validated transaction, then the touched SKUs move on.

The lines go through featurestore.ingest.push_batches (the file path's rules and upsert); the SKUs
whose daily sales changed are dropped from this worker's forecast cache and serving window at
once, and other workers learn of them at their next data-token check (app/services/history.py).

A worker stores one group of batches at a time (``PushQueue``): the batches that arrive while a
group is stored wait and go together into the next, each with its own outcome. A push is mostly
a fixed cost (validation's per-call cost, the statements, the commit), so a group of n batches
costs little more than one. The group is validated and stored in the worker's push process
(featurestore.ingest.pusher): that Python holds no lock the forecasts computed beside it need
(docs/benchmarks.md, pushed orders).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from app.errors import InvalidLines, InvalidRequest, PayloadTooLarge, PushLost
from app.observability import ORDER_LINES
from app.schemas import LineRejectBody, OrdersResponse, OrderValue
from app.services.forecasting import ForecastService
from featurestore.data_versions import Version
from featurestore.ingest import IngestError, PushReport, RejectedLines, TooManyLines
from featurestore.ingest.lines import Batch
from featurestore.ingest.pusher import Pusher, PushProcessLost
from featurestore.pseudonyms import CustomerKeyMissing

# Lines stored together at most (whole batches; a bigger batch goes alone).
GROUP_LINES = 2_000
# After a group, how long the next waits for the clients just answered to push again; only
# right after a group (one that ended less than RECENT_SECONDS ago).
GATHER_SECONDS = 0.005
RECENT_SECONDS = 0.05
# Stores a group: in this worker's push process (featurestore.ingest.pusher), out of the way of
# the forecasts computed here, with the same outcomes as push_batches in this process.
store_batches = Pusher()


@dataclass(eq=False)
class _Waiting:
    engine: Engine
    batch: Batch
    outcome: PushReport | Exception | None = None


class PushQueue:
    """Batches of one process stored one group at a time, in arrival order.

    No thread of its own: a push that finds no group being stored stores at once (with
    whatever else waits); one that arrives meanwhile waits, and the first of those waiting when
    a group ends stores the next group. Every caller returns once its own batch is stored.

    Right after a group, the next waits (at most ``gather_seconds``) for the clients that group
    answered to push again: without it, those that waited during a group form the next one and
    the ones just answered arrive while it is stored, so groups of 1 and 7 alternate (measured
    with 8 clients) and every other group pays a push's fixed cost for one batch. An idle
    queue never waits.
    """

    def __init__(
        self, group_lines: int = GROUP_LINES, gather_seconds: float = GATHER_SECONDS
    ) -> None:
        self.group_lines = group_lines
        self.gather_seconds = gather_seconds
        self._cond = threading.Condition()
        self._waiting: list[_Waiting] = []
        self._storing = False
        # Batches likely to be pushed again soon: the last group's and those still waiting.
        self._expect = 1
        self._done_at = 0.0

    def push(
        self, engine: Engine, lines: Sequence[Mapping[str, OrderValue]], partial: bool
    ) -> PushReport:
        """Store one batch (with those waiting beside it); its report, or raise its error."""
        mine = _Waiting(engine, Batch(lines, partial))
        with self._cond:
            self._waiting.append(mine)
            self._cond.notify_all()  # a group gathering counts it
            while mine.outcome is None and self._storing:
                self._cond.wait()
            leading = mine.outcome is None
            self._storing = self._storing or leading
        if leading:
            try:
                while mine.outcome is None:
                    self._store_next()
            finally:
                with self._cond:
                    self._storing = False
                    self._cond.notify_all()  # the first still waiting stores the next group
        if isinstance(mine.outcome, Exception):
            raise mine.outcome
        assert mine.outcome is not None
        return mine.outcome

    def _gather(self) -> None:
        """With the lock: wait briefly for the clients the last group answered (class doc)."""
        now = time.monotonic()
        if now - self._done_at > RECENT_SECONDS:
            return
        deadline = now + self.gather_seconds
        while len(self._waiting) < self._expect:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _store_next(self) -> None:
        with self._cond:
            self._gather()
            group = self._next_group()
        outcomes: list[PushReport | Exception]
        try:
            outcomes = store_batches(group[0].engine, "orders", [w.batch for w in group])
        except Exception as exc:
            outcomes = [exc] * len(group)
        except BaseException:  # nobody may be left waiting for a group that will not end
            with self._cond:
                for waiting in group:
                    waiting.outcome = RuntimeError("the push was interrupted")
                self._cond.notify_all()
            raise
        with self._cond:
            for waiting, outcome in zip(group, outcomes, strict=True):
                waiting.outcome = outcome
            self._expect = len(group) + len(self._waiting)
            self._done_at = time.monotonic()
            self._cond.notify_all()

    def _next_group(self) -> list[_Waiting]:
        """The oldest batches of the oldest batch's engine, in order, up to ``group_lines``
        lines (the first batch whatever its size), out of the queue."""
        engine = self._waiting[0].engine
        group: list[_Waiting] = []
        rest: list[_Waiting] = []
        lines, full = 0, False
        for waiting in self._waiting:
            size = len(waiting.batch.lines)
            if waiting.engine is not engine or full:
                rest.append(waiting)
            elif group and lines + size > self.group_lines:
                full = True  # the batches after it must not go before it
                rest.append(waiting)
            else:
                group.append(waiting)
                lines += size
        self._waiting = rest
        return group


PUSHES = PushQueue()


def push_orders(
    engine: Engine,
    forecasts: ForecastService | None,
    lines: Sequence[Mapping[str, OrderValue]],
    *,
    partial: bool = False,
) -> OrdersResponse:
    """Store a batch of order lines (all or nothing unless ``partial``) and say what it did."""
    try:
        report = PUSHES.push(engine, lines, partial)
    except RejectedLines as exc:
        ORDER_LINES.labels("rejected").inc(len(exc.rejects))
        refused = [{"index": r.index, "column": r.column, "reason": r.reason} for r in exc.rejects]
        raise InvalidLines(str(exc), refused) from exc
    except TooManyLines as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except PushProcessLost as exc:
        raise PushLost(f"{exc}: send the batch again") from exc
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
