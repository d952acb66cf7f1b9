"""PushQueue: batches arriving while a group is stored go together into the next one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from app.services import orders
from featurestore.ingest import PushReport, RejectedLines
from featurestore.ingest.lines import Batch, Outcome
from featurestore.ingest.pusher import Pusher
from tests.featurestore.ingest_helpers import load_products


def _batch(n: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"Q-{n}",
            "line": i,
            "sku": "AB"[i % 2],
            "ordered_at": "2024-03-05T15:00:00Z",
            "quantity": 1 if n != 3 else "many",
            "unit_price": 2.0,
        }
        for i in (1, 2)
    ]


def test_waiting_batches_go_together_each_with_its_own_answer(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_products(engine, tmp_path)
    groups: list[int] = []
    first_started = threading.Event()
    real = orders.store_batches

    def slow_first(engine: Engine, entity: str, batches: Sequence[Batch]) -> list[Outcome]:
        groups.append(len(batches))
        if len(groups) == 1:
            first_started.set()
            time.sleep(0.5)  # the others arrive meanwhile
        return real(engine, entity, batches)

    monkeypatch.setattr(orders, "store_batches", slow_first)
    queue = orders.PushQueue()
    answers: dict[int, PushReport | Exception] = {}

    def push(n: int) -> None:
        try:
            answers[n] = queue.push(engine, _batch(n), False)
        except Exception as exc:
            answers[n] = exc

    threads = [threading.Thread(target=push, args=(0,))]
    threads[0].start()
    assert first_started.wait(10)
    threads += [threading.Thread(target=push, args=(n,)) for n in range(1, 6)]
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(30)
    assert groups == [1, 5]
    assert isinstance(answers[3], RejectedLines)
    for n in (0, 1, 2, 4, 5):
        report = answers[n]
        assert isinstance(report, PushReport) and report.inserted == 2, report
    # A retried batch goes alone now (nobody waits): unchanged.
    again = queue.push(engine, _batch(1), False)
    assert (again.inserted, again.unchanged, groups[-1]) == (0, 2, 1)


def test_a_group_that_fails_fails_every_batch_and_frees_the_queue(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_products(engine, tmp_path)
    queue = orders.PushQueue()

    def broken(engine: Engine, entity: str, batches: Sequence[Batch]) -> list[Outcome]:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(orders, "store_batches", broken)
    with pytest.raises(ConnectionError):
        queue.push(engine, _batch(0), False)
    monkeypatch.undo()
    assert queue.push(engine, _batch(0), False).inserted == 2


def test_groups_keep_arrival_order_and_their_size() -> None:
    """A batch that does not fit ends the group: the later ones must not go before it."""
    queue = orders.PushQueue(group_lines=3)
    engine, other = object(), object()
    waiting = [
        orders._Waiting(engine, Batch([{}] * n))  # type: ignore[arg-type]
        for n in (2, 1, 2, 1)
    ]
    waiting.insert(1, orders._Waiting(other, Batch([{}])))  # type: ignore[arg-type]
    queue._waiting = list(waiting)
    first = queue._next_group()
    assert first == [waiting[0], waiting[2]]
    assert queue._next_group() == [waiting[1]]
    assert queue._next_group() == [waiting[3], waiting[4]]


def test_the_next_group_waits_for_the_clients_just_answered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Clients pushing again as soon as they are answered: groups stay whole (without the
    gathering, groups of 1 and n - 1 alternate)."""
    sizes: list[int] = []

    def store(engine: Engine, entity: str, batches: Sequence[Batch]) -> list[Outcome]:
        sizes.append(len(batches))
        time.sleep(0.01)
        return [PushReport(received=len(b.lines)) for b in batches]

    monkeypatch.setattr(orders, "store_batches", store)
    queue = orders.PushQueue(gather_seconds=0.2)  # generous: the machine may be busy
    engine = object()

    def client() -> None:
        for _ in range(10):
            queue.push(engine, [{}], False)  # type: ignore[arg-type]

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(sizes) == 40
    assert sorted(sizes)[len(sizes) // 2] == 4, sizes


def test_pushes_are_stored_in_a_process_of_their_own(engine: Engine, tmp_path: Path) -> None:
    """The default store: a child process pushes, with the outcomes this process would get
    (reports, rejects); a child that died is replaced by the next push."""
    load_products(engine, tmp_path)
    pusher = orders.store_batches
    assert isinstance(pusher, Pusher) and pusher.in_child(engine)
    child = pusher.pid()
    assert child != os.getpid()
    outcomes = pusher(engine, "orders", [Batch(_batch(0)), Batch(_batch(3)), Batch(_batch(0))])
    first, rejected, again = outcomes
    assert isinstance(first, PushReport) and first.inserted == 2
    assert isinstance(rejected, RejectedLines) and rejected.rejects[0].column == "quantity"
    assert isinstance(again, PushReport) and again.unchanged == 2
    os.kill(child, signal.SIGKILL)
    for _ in range(100):  # the pool notices its child gone
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    (report,) = pusher(engine, "orders", [Batch(_batch(1))])
    assert isinstance(report, PushReport) and report.inserted == 2, report
    assert pusher.pid() != child
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT COUNT(*) FROM order_lines")).scalar_one()
    assert stored == 4


def test_an_in_memory_database_is_pushed_to_in_this_process() -> None:
    assert not Pusher.in_child(create_engine("sqlite://"))


def test_the_push_process_ends_with_its_worker(tmp_path: Path) -> None:
    """A worker killed outright (no shutdown) leaves no push process behind."""
    script = (
        "import sys, time\n"
        "from featurestore.ingest.pusher import Pusher\n"
        "print(Pusher().pid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    worker = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert worker.stdout is not None
        child = int(worker.stdout.readline())
        os.kill(child, 0)  # alive while its worker is
        worker.kill()
        worker.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(child, signal.SIGKILL)
            raise AssertionError("the push process outlived its worker")
    finally:
        worker.kill()
        worker.wait(10)
        if worker.stdout is not None:
            worker.stdout.close()
