"""What the dashboard's pages show, gathered from the registry, the store and the forecasts.

Pages render these server-side; their plots are drawn in the browser from the API's JSON.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

import pandas as pd
from sqlalchemy import Engine

from app.services.forecasting import ForecastService
from featurestore import forecast_runs, jobs
from featurestore.readers import read_frame
from training.registry import NoChampion, Registry, RegistryError

HISTORY_DAYS = 56  # days of sales the SKU page plots before the forecast
SEARCH_LIMIT = 50
JOBS_SHOWN = 10
REGISTRY_EVENTS = 20
SCORES = ("rmsse", "wape", "bias", "mase", "coverage_80")


def _scores(block: dict[str, Any] | None) -> dict[str, Any]:
    block = block or {}
    return {k: block[k] for k in SCORES if block.get(k) is not None}


def overview(registry: Registry, engine: Engine) -> dict[str, Any]:
    """The champion, the registry's history, the last nightly run and the latest jobs."""
    champion: dict[str, Any] | None = None
    try:
        version = registry.champion()
        if version is not None:
            manifest = registry.get(version)
            metrics = manifest.metrics or {}
            champion = {
                "version": version,
                "model": metrics.get("champion_model") or (manifest.params or {}).get("model"),
                "created_at": manifest.created_at,
                "data_end": manifest.data_end,
                "sku_count": manifest.sku_count,
                "cutoffs": metrics.get("cutoffs") or [],
                "scores": _scores(metrics.get("overall")),
                "baseline": _scores(metrics.get("seasonal_naive")),
            }
        history = registry.history()[:REGISTRY_EVENTS]
    except (NoChampion, RegistryError):
        history = []
    jobs.reap_stale(engine)
    job_rows = [
        {k: v for k, v in asdict(j).items() if k not in {"pid", "heartbeat_at"}}
        for j in jobs.list_jobs(engine, JOBS_SHOWN)
    ]
    run = forecast_runs.latest_run(engine)
    return {
        "champion": champion,
        "history": history,
        "run": None if run is None else asdict(run),
        "jobs": job_rows,
    }


def accuracy(registry: Registry) -> dict[str, Any] | None:
    """The champion's backtest scores by segment (category, store, demand class); None if none."""
    version = registry.champion()
    if version is None:
        return None
    metrics = registry.get(version).metrics or {}
    segments = {
        name: [
            {"key": key, **_scores(block), "rows": block.get("n")}
            for key, block in sorted(groups.items())
        ]
        for name, groups in (metrics.get("by_segment") or {}).items()
    }
    return {
        "version": version,
        "model": metrics.get("champion_model"),
        "overall": _scores(metrics.get("overall")),
        "baseline": _scores(metrics.get("seasonal_naive")),
        "cutoffs": metrics.get("cutoffs") or [],
        "segments": segments,
    }


def search_skus(forecasts: ForecastService, query: str) -> list[dict[str, Any]]:
    """Up to SEARCH_LIMIT products whose SKU, name or category contains the query."""
    products = forecasts.snapshot().products
    q = query.strip().lower()
    if not q:
        return []
    text = products["sku"].astype(str).str.lower()
    for column in ("item_id", "department", "category", "store"):
        if column in products:
            text = text + " " + products[column].fillna("").astype(str).str.lower()
    found = products[text.str.contains(q, regex=False)].head(SEARCH_LIMIT)
    columns = [c for c in ("sku", "category", "store", "status") if c in found]
    return [
        {str(c): (None if pd.isna(v) else v) for c, v in row.items()}
        for row in found[columns].to_dict("records")
    ]


def sku_history(forecasts: ForecastService, sku: str) -> dict[str, Any] | None:
    """The SKU's product row and its last HISTORY_DAYS days of sales; None if unknown."""
    snap = forecasts.snapshot()
    if sku not in snap.position or snap.as_of is None:
        return None
    product = snap.products.iloc[snap.position[sku]]
    start = snap.as_of - dt.timedelta(days=HISTORY_DAYS - 1)
    frame = read_frame(forecasts.engine, skus=[sku], start=start, end=snap.as_of)
    days = [
        {"date": pd.Timestamp(d).date().isoformat(), "units": None if pd.isna(u) else float(u)}
        for d, u in zip(frame["date"], frame["units"], strict=True)
    ]
    attrs = {
        c: (None if pd.isna(product[c]) else product[c])
        for c in ("item_id", "department", "category", "store", "status")
        if c in product
    }
    return {"sku": sku, "data_until": snap.as_of.isoformat(), "product": attrs, "history": days}
