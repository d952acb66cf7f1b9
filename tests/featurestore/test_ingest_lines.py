"""Pushed batches stored together (push_batches) end as if pushed one after the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from featurestore.ingest import PushReport, RejectedLines, push_lines
from featurestore.ingest.lines import Batch, push_batches
from tests.featurestore.ingest_helpers import load_products, snapshot

DAY = "2024-03-05T15:00:00Z"


def _line(order: str, line: int, sku: str, quantity: Any, **more: Any) -> dict[str, Any]:
    return {
        "order_id": order,
        "line": line,
        "sku": sku,
        "ordered_at": DAY,
        "quantity": quantity,
        "unit_price": 2.0,
    } | more


def _batches() -> list[Batch]:
    return [
        Batch([_line("o1", 1, "A", 1), _line("o1", 2, "A", 2)]),
        # o1/1 again: after the first batch, as an update (a later transaction of the group)
        Batch([_line("o1", 1, "A", 5), _line("o2", 1, "B", 1)]),
        # one bad line, not partial: nothing of it stored
        Batch([_line("o3", 1, "B", 1), _line("o3", 2, "B", "many")]),
        # partial: the good line kept
        Batch([_line("o4", 1, "NOPE", 1), _line("o4", 2, "B", 3)], partial=True),
        # a key twice in one batch: both copies refused
        Batch([_line("o5", 1, "B", 1), _line("o5", 1, "B", 2)]),
        # the same key as a line of batch 3, another batch's: no duplicate
        Batch([_line("o4", 2, "B", 3)]),
        # other fields (a discount): its own transaction
        Batch([_line("o6", 1, "A", 4, discount=0.5)]),
        Batch([]),
    ]


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in ("order_lines", "daily_sales", "sku_data_versions"):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("UPDATE products SET first_sale_date = NULL, last_sale_date = NULL"))


def _said(outcome: PushReport | Exception) -> tuple[Any, ...]:
    if isinstance(outcome, RejectedLines):
        return ("rejected", [(r.index, r.column, r.reason) for r in outcome.rejects])
    assert isinstance(outcome, PushReport), outcome
    rejected = [(r.index, r.column, r.reason) for r in outcome.rejected]
    counts = (outcome.received, outcome.inserted, outcome.unchanged, outcome.updated)
    return ("stored", counts, rejected, sorted(outcome.changed))


def test_batches_stored_together_end_as_pushed_one_by_one(engine: Engine, tmp_path: Path) -> None:
    load_products(engine, tmp_path)
    together = [_said(o) for o in push_batches(engine, "orders", _batches())]
    stored_together = snapshot(engine)
    _reset(engine)
    alone: list[tuple[Any, ...]] = []
    for batch in _batches():
        try:
            alone.append(_said(push_lines(engine, "orders", batch.lines, partial=batch.partial)))
        except RejectedLines as exc:
            alone.append(_said(exc))
    assert together == alone
    assert snapshot(engine) == stored_together
    assert together[1] == ("stored", (2, 1, 0, 1), [], ["A", "B"])
    assert together[2] == ("rejected", [(1, "quantity", "not a number")])
    assert together[3] == ("stored", (2, 1, 0, 0), [(0, "sku", "unknown sku")], ["B"])
    assert together[4][0] == "rejected" and [r[0] for r in together[4][1]] == [0, 1]
    assert together[5] == ("stored", (1, 0, 1, 0), [], [])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT order_id, line, quantity FROM order_lines")).all()
    units = {f"{o}/{n}": float(q) for o, n, q in rows}
    assert units == {"o1/1": 5.0, "o1/2": 2.0, "o2/1": 1.0, "o4/2": 3.0, "o6/1": 4.0}


def test_a_batch_refused_whole_leaves_the_others_of_its_group(
    engine: Engine, tmp_path: Path
) -> None:
    """Customer ids without a key refuse their batch only (the group is pushed again without
    it); a batch over the limit too."""
    load_products(engine, tmp_path)
    batches = [
        Batch([_line("c1", 1, "A", 1, customer_id=None)]),
        Batch([_line("c2", 1, "A", 1, customer_id="someone")]),
        Batch([_line("c3", 1, "B", 2, customer_id=None)]),
        Batch([_line("c4", 1, "B", 2)] * 10_001),
    ]
    outcomes = push_batches(engine, "orders", batches)
    assert [type(o).__name__ for o in outcomes] == [
        "PushReport",
        "CustomerKeyMissing",
        "PushReport",
        "TooManyLines",
    ]
    with engine.connect() as conn:
        orders = conn.execute(text("SELECT order_id FROM order_lines ORDER BY order_id")).scalars()
        assert list(orders) == ["c1", "c3"]
