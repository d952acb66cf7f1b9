"""Per-SKU data versions: which SKUs pushed orders changed, for serving to drop only those.

``featurestore.ingest.lines`` bumps a SKU's version (and its ``changed_at``) in the push's own
transaction. A serving worker reads every version when it builds its snapshot, then asks only
for the rows changed since its last look, with an overlap: a push stamped just before a look may
commit just after it, so rows are asked for again for ``OVERLAP`` and compared by version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine, select

from featurestore.tables import SkuDataVersion

# Longer than any push transaction (its statements are bounded by the service's timeout).
OVERLAP = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class Version:
    """A SKU's data version and when it last changed."""

    version: int
    changed_at: dt.datetime


def read_versions(engine: Engine, since: dt.datetime | None = None) -> dict[str, Version]:
    """Every SKU's version (``since``: only those changed from ``since - OVERLAP`` on)."""
    query = select(SkuDataVersion.sku, SkuDataVersion.version, SkuDataVersion.changed_at)
    if since is not None:
        query = query.where(SkuDataVersion.changed_at >= since - OVERLAP)
    with engine.connect() as conn:
        return {sku: Version(int(v), _aware(at)) for sku, v, at in conn.execute(query)}


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite gives naive datetimes back (stored in UTC).
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
