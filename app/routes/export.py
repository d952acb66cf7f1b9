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
from app.errors import (
    DatabaseError,
    DatabaseUnavailable,
    ForbiddenApiKey,
    InvalidRequest,
    MissingApiKey,
    NotFound,
    responses,
)
from app.schemas import PRINTABLE
from featurestore import forecast_runs
from featurestore.readers import last_sales_date
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
        **responses(
            NotFound,
            InvalidRequest,
            MissingApiKey,
            ForbiddenApiKey,
            DatabaseError,
            DatabaseUnavailable,
        ),
    },
)
async def export(
    engine: EngineDep,
    format: Annotated[Literal["ndjson", "csv"], Query()] = "ndjson",
    cursor: Annotated[
        str | None,
        Query(min_length=1, max_length=64, pattern=PRINTABLE, description="the last X-Next-Cursor"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100_000, description="SKUs per page")] = 1000,
) -> StreamingResponse:
    """The latest complete forecast-all run for the whole catalogue (NDJSON or CSV).

    The run of the latest as-of up to the store's last sales day; a cursor must be one this
    export gave (422 otherwise).
    """

    def page() -> tuple[forecast_runs.RunInfo, list[str]]:
        run = forecast_runs.latest_run(engine, until=last_sales_date(engine))
        if run is None:
            raise NotFound("no complete forecast-all run yet: run `salesfc forecast-all --store`")
        skus = forecast_runs.page_skus(engine, run.run_id, after=cursor, limit=limit)
        if skus is None:
            raise InvalidRequest(
                f"cursor {cursor!r} is not one this export gave for run {run.run_id}: "
                "pass the X-Next-Cursor header of the previous page, or no cursor to start"
            )
        return run, skus

    run, skus = await run_in_threadpool(page)
    headers = {
        "X-Run-Id": run.run_id,
        "X-Model-Version": run.model_version,
        "X-As-Of": run.as_of.isoformat(),
    }
    if len(skus) == limit:
        headers["X-Next-Cursor"] = skus[-1]
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(_lines(engine, run, skus, format), media_type=media, headers=headers)
