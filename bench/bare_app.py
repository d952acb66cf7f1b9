"""The serving benchmark's ceiling: a bare FastAPI endpoint, served like `salesfc serve`.

No middleware, no database, no model: what uvicorn (uvloop + httptools) and FastAPI's routing,
path parsing and JSON response cost on their own. The path has the forecast route's shape so the
load generator drives it with the same rotating-SKU script.

    uvicorn bare_app:create_app --factory --app-dir bench --loop uvloop --http httptools
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    """An app with one trivial JSON endpoint and a readiness probe."""
    app = FastAPI(title="bare", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/v1/forecast/{sku}")
    async def bare(sku: str) -> dict[str, str]:
        """Echo the SKU: routing, parsing and JSON only."""
        return {"sku": sku}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        """Always ready."""
        return {"status": "ready"}

    return app
