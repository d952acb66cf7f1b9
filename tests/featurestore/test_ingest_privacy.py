"""Customer ids (issue #11, D11): pseudonymised at ingestion under SALESFC_CUSTOMER_ID_KEY,
refused without it, and never in clear in the store, ingestion_log, reject files or logs."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import structlog
from pydantic import ValidationError
from sqlalchemy import Engine

from featurestore.config import Settings, get_settings
from featurestore.ingest import IngestError, ingest_file
from featurestore.pseudonyms import WITHHELD, Pseudonymiser
from featurestore.validate import SourceOptions
from tests.featurestore.ingest_helpers import load_products, read_rejects, rows_of, snapshot, write

KEY = "k" * 40
OTHER_KEY = "o" * 40
CLEAR = ("alice@example.com", "CUST-000042")
PSEUDONYM = re.compile(r"^[0-9a-f]{8}:[0-9a-f]{48}$")


def use_key(monkeypatch: pytest.MonkeyPatch, key: str | None) -> Settings:
    if key is None:
        monkeypatch.delenv("SALESFC_CUSTOMER_ID_KEY", raising=False)
    else:
        monkeypatch.setenv("SALESFC_CUSTOMER_ID_KEY", key)
    get_settings.cache_clear()
    return get_settings()


def orders_with_customers(tmp_path: Path, name: str = "orders.csv") -> Path:
    return write(
        tmp_path / name,
        f"""
        order_id,line,sku,customer_id,ordered_at,quantity
        o1,1,A,{CLEAR[0]},2024-01-05T10:00:00Z,2
        o1,2,B,{CLEAR[0]},2024-01-05T10:00:00Z,1
        o2,1,A,{CLEAR[1]},2024-01-06T10:00:00Z,1
        o3,1,A,,2024-01-06T11:00:00Z,1
        """,
    )


def everything_stored(engine: Engine) -> str:
    tables = ("order_lines", "daily_sales", "ingestion_log", "products")
    return repr([rows_of(engine, f"SELECT * FROM {t}") for t in tables])


def test_a_file_with_customer_ids_is_refused_without_a_key(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_key(monkeypatch, None)
    load_products(engine, tmp_path)
    before = snapshot(engine)
    with pytest.raises(IngestError, match="SALESFC_CUSTOMER_ID_KEY") as err:
        ingest_file(engine, "orders", orders_with_customers(tmp_path))
    assert snapshot(engine) == before
    assert not any(c in str(err.value) for c in CLEAR)
    assert rows_of(engine, "SELECT status FROM ingestion_log WHERE entity = 'orders'") == [
        ("failed",)
    ]
    # leaving the column out, or a column without values, needs no key
    path = orders_with_customers(tmp_path, "again.csv")
    ignored = ingest_file(engine, "orders", path, options=SourceOptions(ignore=("customer_id",)))
    assert (ignored.status, ignored.rows_accepted) == ("loaded", 4)
    empty = write(
        tmp_path / "empty.csv",
        "order_id,line,sku,customer_id,ordered_at\no9,1,A,,2024-01-05T10:00:00Z\n",
    )
    assert ingest_file(engine, "orders", empty).status == "loaded"
    assert rows_of(engine, "SELECT count(*) FROM order_lines WHERE customer_id IS NOT NULL") == [
        (0,)
    ]


def test_customer_ids_are_stored_as_stable_keyed_pseudonyms(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = use_key(monkeypatch, KEY)
    load_products(engine, tmp_path)
    path = orders_with_customers(tmp_path)
    assert ingest_file(engine, "orders", path).rows_accepted == 4
    stored = dict(rows_of(engine, "SELECT order_id || '/' || line, customer_id FROM order_lines"))
    assert stored["o3/1"] is None
    assert all(PSEUDONYM.match(v) for k, v in stored.items() if k != "o3/1")
    assert stored["o1/1"] == stored["o1/2"] != stored["o2/1"]  # one customer's orders link up
    pseudonyms = Pseudonymiser.from_settings(settings)
    assert pseudonyms is not None and stored["o2/1"] == pseudonyms.pseudonym(CLEAR[1])
    assert not any(c in everything_stored(engine) for c in CLEAR)
    # the same key: the same pseudonyms, a repeat changes nothing
    assert ingest_file(engine, "orders", path).status == "unchanged"

    # a new key: the same file loads again and its lines take the new key's pseudonyms
    use_key(monkeypatch, OTHER_KEY)
    assert ingest_file(engine, "orders", path).status == "loaded"
    rekeyed = dict(rows_of(engine, "SELECT order_id || '/' || line, customer_id FROM order_lines"))
    assert rekeyed["o1/1"] != stored["o1/1"] and PSEUDONYM.match(rekeyed["o1/1"])
    assert rekeyed["o1/1"].split(":")[0] != stored["o1/1"].split(":")[0]  # the key's id
    assert not any(c in everything_stored(engine) for c in CLEAR)


def test_reject_files_never_show_customer_ids(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_key(monkeypatch, KEY)
    load_products(engine, tmp_path)
    path = write(
        tmp_path / "bad.csv",
        (
            "order_id,line,sku,customer_id,ordered_at,quantity\n"
            f"o1,1,A,{CLEAR[0]},2024-01-05T10:00:00Z,2\n"
            f"o2,1,A,{CLEAR[0]},2024-01-05T10:00:00Z,1,surplus\n"  # malformed
            f"o3,1,ZZ,{CLEAR[1]},2024-01-05T10:00:00Z,1\n"  # unknown sku
            f"o4,1,A,{CLEAR[1]},not a time,1\n"
        ).encode()
        + b"o5,1,A,CUST-\xff-7,2024-01-05T10:00:00Z,1\n",  # undecodable customer id
    )
    report = ingest_file(engine, "orders", path, max_reject=0.9)
    assert report.rows_accepted == 1
    assert report.reject_path is not None
    text = report.reject_path.read_text()
    assert not any(c in text for c in (*CLEAR, "CUST-"))
    rejects = {
        r["row"]: (r["reason"], r["column"], r["value"]) for r in read_rejects(report.reject_path)
    }
    assert rejects["2"] == (
        "wrong number of fields",
        "",
        f"7 fields, expected 6: record {WITHHELD}",
    )
    assert rejects["3"] == ("unknown sku", "sku", "ZZ")
    assert rejects["4"] == ("unparseable timestamp", "ordered_at", "not a time")
    assert rejects["5"] == ("undecodable bytes", "customer_id", WITHHELD)


def test_ingestion_logs_no_customer_ids(
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    use_key(monkeypatch, KEY)
    load_products(engine, tmp_path)
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as events:
        ingest_file(engine, "orders", orders_with_customers(tmp_path))
        use_key(monkeypatch, None)
        with pytest.raises(IngestError):
            ingest_file(engine, "orders", orders_with_customers(tmp_path, "o2.csv"))
    logged = caplog.text + repr(events)
    assert not any(c in logged for c in CLEAR)


def test_the_key_must_be_long_enough() -> None:
    with pytest.raises(ValidationError):
        Settings(customer_id_key="short")
    pseudonyms = Pseudonymiser.from_settings(Settings(customer_id_key=KEY))
    assert pseudonyms is not None and KEY not in repr(pseudonyms)


@pytest.mark.parametrize("key", [KEY, None])
def test_upgrading_pseudonymises_ids_an_older_version_stored_in_clear(
    db_url: str, monkeypatch: pytest.MonkeyPatch, key: str | None
) -> None:
    from sqlalchemy import text

    from featurestore import migrations
    from featurestore.db import make_engine

    migrations.downgrade(db_url, "0004")
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO order_lines (order_id, line, sku, customer_id, ordered_at, "
                    "sale_date, quantity, discount, status) VALUES "
                    "('o1', 1, 'A', :c, '2024-01-05 10:00:00', '2024-01-05', 1, 0, 'completed'),"
                    "('o1', 2, 'A', :c, '2024-01-05 10:00:00', '2024-01-05', 1, 0, 'completed'),"
                    "('o2', 1, 'A', NULL, '2024-01-05 10:00:00', '2024-01-05', 1, 0, 'completed')"
                ),
                {"c": CLEAR[0]},
            )
        settings = use_key(monkeypatch, key)
        migrations.upgrade(db_url)
        got = rows_of(engine, "SELECT order_id, line, customer_id FROM order_lines ORDER BY 1, 2")
    finally:
        engine.dispose()
    pseudonyms = Pseudonymiser.from_settings(settings)
    expected = None if pseudonyms is None else pseudonyms.pseudonym(CLEAR[0])
    assert got == [("o1", 1, expected), ("o1", 2, expected), ("o2", 1, None)]
