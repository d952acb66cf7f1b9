"""Validated, transactional, idempotent ingestion of CSV and Parquet files and generated frames.

One file (or set of frames) is one transaction; loading the same content again changes nothing.
Modules: load (entry points and the transaction), reading, csvfile and chunks (sources in
chunks), keys (duplicate keys), rejects (the reject file), store (stage and upsert), bulk
(PostgreSQL binary COPY and index rebuilds), entities (each entity's specifics, one table),
derived (daily sales from order lines, sale dates), report (reports, errors, ingestion_log),
lines (batches of lines pushed through the API).

order_lines.sku and daily_sales.sku have no foreign key (migrations 0003 and 0004): every SKU of
an order or sales file is checked against products inside the load's own transaction and
rejected as "unknown sku" when absent. Code that writes these tables otherwise must check SKUs.
"""

from featurestore.ingest.lines import (
    MAX_LINES,
    LineReject,
    PushReport,
    RejectedLines,
    TooManyLines,
    push_lines,
)
from featurestore.ingest.load import Progress, import_m5, ingest_file, ingest_frames
from featurestore.ingest.reading import estimate_rows, file_checksum
from featurestore.ingest.report import IngestError, IngestReport, TooManyRejects

__all__ = [
    "MAX_LINES",
    "IngestError",
    "IngestReport",
    "LineReject",
    "Progress",
    "PushReport",
    "RejectedLines",
    "TooManyLines",
    "TooManyRejects",
    "estimate_rows",
    "file_checksum",
    "import_m5",
    "ingest_file",
    "ingest_frames",
    "push_lines",
]
