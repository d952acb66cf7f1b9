"""The nightly export: the latest complete forecast-all run, streamed and paginated by cursor."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import EngineDep, ReadKey
from app.errors import ForbiddenApiKey, MissingApiKey, NotFound, responses
from featurestore import forecast_runs
from training.predict import quantile_column

router = APIRouter(prefix="/v1", tags=["forecasts"], dependencies=[ReadKey])


def _lines(
    engine: EngineDep, run: forecast_runs.RunInfo, skus: list[str], fmt: str
) -> Iterator[str]:
    names = [quantile_column(q) for q in run.quantiles]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["sku", "date", "mean", *names, "cold_start"])
        for sku, date, mean, qs, cold in forecast_runs.iter_rows(engine, run.run_id, skus):
            writer.writerow([sku, date.isoformat(), f"{mean:.4f}", *qs, int(cold)])
            if buf.tell() > 1 << 16:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
        yield buf.getvalue()
        return
    for sku, date, mean, qs, cold in forecast_runs.iter_rows(engine, run.run_id, skus):
        row = {"sku": sku, "date": date.isoformat(), "mean": round(mean, 4)}
        row.update(zip(names, qs, strict=True))
        row["cold_start"] = cold
        yield json.dumps(row) + "\n"


@router.get(
    "/forecasts",
    responses={
        200: {
            "content": {"application/x-ndjson": {}, "text/csv": {}},
            "description": "One line per SKU and day; run id, model version, as-of date and the "
            "next cursor in the X-Run-Id, X-Model-Version, X-As-Of and X-Next-Cursor headers",
        },
        **responses(NotFound, MissingApiKey, ForbiddenApiKey),
    },
)
async def export(
    engine: EngineDep,
    format: Annotated[Literal["ndjson", "csv"], Query()] = "ndjson",
    cursor: Annotated[
        str | None, Query(max_length=64, description="the last X-Next-Cursor")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="SKUs per page")] = 1000,
) -> StreamingResponse:
    """The latest complete forecast-all run for the whole catalogue (NDJSON or CSV)."""
    run = await run_in_threadpool(forecast_runs.latest_run, engine)
    if run is None:
        raise NotFound("no complete forecast-all run yet: run `salesfc forecast-all --store`")
    skus = await run_in_threadpool(
        forecast_runs.page_skus, engine, run.run_id, after=cursor, limit=limit
    )
    headers = {
        "X-Run-Id": run.run_id,
        "X-Model-Version": run.model_version,
        "X-As-Of": run.as_of.isoformat(),
    }
    if len(skus) == limit:
        headers["X-Next-Cursor"] = skus[-1]
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(_lines(engine, run, skus, format), media_type=media, headers=headers)
