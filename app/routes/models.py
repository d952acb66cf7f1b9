"""Model registry routes: list, show, promote and roll back (ops key for changes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from fastapi.concurrency import run_in_threadpool

from app.deps import OpsKey, ReadKey, RegistryDep
from app.errors import Conflict, ForbiddenApiKey, MissingApiKey, responses
from app.schemas import ModelInfo, ModelList, PromoteRequest
from training import registry as reg
from training.registry import UnknownVersion

router = APIRouter(prefix="/v1/models", tags=["models"])
VERSION = Path(max_length=128, examples=["20261128T101500Z-3f9a"])


def _info(registry: reg.Registry, manifest: Any, champion: str | None) -> ModelInfo:
    metrics = manifest.metrics or {}
    return ModelInfo(
        version=manifest.version,
        created_at=manifest.created_at,
        champion=manifest.version == champion,
        data_start=manifest.data_start,
        data_end=manifest.data_end,
        cutoff=manifest.cutoff,
        sku_count=manifest.sku_count,
        model=(manifest.params or {}).get("model"),
        selection_metric=metrics.get("selection_metric"),
        selection_score=metrics.get("selection_score"),
    )


@router.get(
    "",
    response_model=ModelList,
    dependencies=[ReadKey],
    responses=responses(MissingApiKey, ForbiddenApiKey),
)
def list_models(registry: RegistryDep) -> ModelList:
    """Every bundle, newest first, with the champion marked."""
    champion = registry.champion()
    return ModelList(
        champion=champion,
        models=[_info(registry, m, champion) for m in registry.versions()],
        history=registry.history()[:20],
    )


@router.get(
    "/{version}",
    dependencies=[ReadKey],
    responses=responses(UnknownVersion, MissingApiKey, ForbiddenApiKey),
)
def show_model(registry: RegistryDep, version: Annotated[str, VERSION]) -> dict[str, Any]:
    """A bundle's whole manifest."""
    return registry.get(version).to_dict()  # UnknownVersion: 404 through app.errors' handler


@router.post(
    "/{version}/promote",
    response_model=ModelList,
    dependencies=[OpsKey],
    responses=responses(UnknownVersion, Conflict, MissingApiKey, ForbiddenApiKey),
)
async def promote(
    registry: RegistryDep,
    version: Annotated[str, VERSION],
    body: Annotated[PromoteRequest | None, Body()] = None,
) -> ModelList:
    """Make a version the champion; every worker swaps to it on its next request."""
    reason = body.reason if body else "promoted through the API"
    try:
        await run_in_threadpool(registry.promote, version, reason=reason)
    except UnknownVersion:
        raise  # 404, not the 409 of the other registry errors
    except reg.RegistryError as exc:
        raise Conflict(str(exc)) from exc
    return list_models(registry)


@router.post(
    "/rollback",
    response_model=ModelList,
    dependencies=[OpsKey],
    responses=responses(Conflict, MissingApiKey, ForbiddenApiKey),
)
async def rollback(
    registry: RegistryDep, body: Annotated[PromoteRequest | None, Body()] = None
) -> ModelList:
    """Go back to the previous champion."""
    reason = body.reason if body else "rolled back through the API"
    try:
        await run_in_threadpool(registry.rollback, reason=reason)
    except reg.RegistryError as exc:
        raise Conflict(str(exc)) from exc
    return list_models(registry)
