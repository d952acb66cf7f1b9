"""Helpers shared by the ingestion tests: files, table snapshots, queries."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from featurestore.config import Settings, get_settings
from featurestore.ingest import ingest_file

DATA_TABLES = (
    "products",
    "order_lines",
    "daily_sales",
    "prices",
    "promotions",
    "calendar_events",
)
LONG = "X" * 65  # longer than any 64-character column
ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, content: str | bytes) -> Path:
    data = content.encode() if isinstance(content, str) else content
    path.write_bytes(textwrap.dedent(data.decode("latin-1")).lstrip().encode("latin-1"))
    return path


def snapshot(engine: Engine) -> dict[str, Any]:
    """Every data table's rows (products without their update stamp) and the loaded-log count."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for table in DATA_TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
            out[table] = sorted(
                (tuple((k, str(v)) for k, v in row.items() if k not in ("updated_at", "id")))
                for row in rows
            )
        out["loaded"] = conn.execute(
            text("SELECT count(*) FROM ingestion_log WHERE status = 'loaded'")
        ).scalar_one()
    return out


def rows_of(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params).all()]


def read_rejects(path: Path | None) -> list[dict[str, str]]:
    assert path is not None and path.exists()
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def load_products(engine: Engine, tmp_path: Path, skus: tuple[str, ...] = ("A", "B")) -> None:
    lines = "\n".join(f"{s},Product {s},fruit,US-CA" for s in skus)
    path = write(tmp_path / "products.csv", f"sku,name,category,region\n{lines}\n")
    assert ingest_file(engine, "products", path).status == "loaded"


def use_timezone(monkeypatch: pytest.MonkeyPatch, zone: str) -> Settings:
    monkeypatch.setenv("SALESFC_TIMEZONE", zone)
    get_settings.cache_clear()
    return get_settings()
