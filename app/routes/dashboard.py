"""The operations dashboard: server-rendered pages (Jinja2) whose plots the browser draws from
the API's JSON with the app's own script (app/static): no CDN, no build step.

Pages need a read key once one is configured: the X-API-Key header, or the login form, which
keeps it in an HttpOnly, SameSite=Strict cookie that the pages' API calls then carry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from app.deps import KEY_COOKIE, EngineDep, ForecastDep, RegistryDep, key_allowed, read_keys
from app.errors import NotFound
from app.routes.aggregate import AggregateDep
from app.schemas import PRINTABLE, SKU_MAX
from app.services import dashboard

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=HERE / "templates")
STATIC = HERE / "static"
ASSETS = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
# Every asset is the app's own; inline scripts are refused (data travels as JSON islands).
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
TOTAL_LEVELS = ("category", "store")

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _given_key(request: Request) -> str | None:
    return request.headers.get("x-api-key") or request.cookies.get(KEY_COOKIE)


def _signed_in(request: Request) -> bool:
    keys = read_keys(request.app.state.settings)
    if not keys:
        return True
    given = _given_key(request)
    return bool(given) and key_allowed(given or "", keys)


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/dashboard/login?next={quote(target, safe='')}", status_code=303)


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    base = {
        "page": name.removesuffix(".html"),
        "open": not read_keys(request.app.state.settings),
        "header_key": bool(request.headers.get("x-api-key")),
    }
    return TEMPLATES.TemplateResponse(
        request, name, {**base, **context}, status_code=status, headers=HEADERS
    )


def _safe_next(target: str | None) -> str:
    """Only a dashboard path: never a redirect off the site."""
    if target and target.startswith("/dashboard") and not target.startswith("//"):
        return target
    return "/dashboard"


@router.get("/static/{name}")
async def asset(name: str) -> FileResponse:
    """The dashboard's script and style sheet (a fixed list: no path reaches other files)."""
    if name not in ASSETS:
        raise NotFound(f"no asset {name}")
    return FileResponse(
        STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"}
    )


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    """The sign-in form (a read key)."""
    return _page(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key; keep it in an HttpOnly cookie and go on, or show the form again (401)."""
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    key = form.get("key", "").strip()
    target = _safe_next(form.get("next"))
    keys = read_keys(request.app.state.settings)
    if keys and not (key and key_allowed(key, keys)):
        error = "This key is not a read key of this service." if key else "Enter a read key."
        return _page(request, "login.html", {"next": target, "error": error}, status=401)
    response = RedirectResponse(target, status_code=303)
    if keys:
        response.set_cookie(
            KEY_COOKIE,
            key,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
            max_age=12 * 3600,
        )
    return response


@router.post("/logout")
async def logout() -> Response:
    """Forget the key."""
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(KEY_COOKIE, path="/")
    return response


@router.get("")
async def overview(request: Request, registry: RegistryDep, engine: EngineDep) -> Response:
    """Champion, registry history with reasons, the last nightly run, jobs and their progress."""
    if not _signed_in(request):
        return _to_login(request)
    data = await run_in_threadpool(dashboard.overview, registry, engine)
    return _page(request, "overview.html", data)


@router.get("/accuracy")
async def accuracy(request: Request, registry: RegistryDep) -> Response:
    """Backtest scores of the champion by horizon (plotted) and by segment."""
    if not _signed_in(request):
        return _to_login(request)
    data = await run_in_threadpool(dashboard.accuracy, registry)
    return _page(request, "accuracy.html", {"acc": data})


@router.get("/sku")
async def sku_page(
    request: Request,
    forecasts: ForecastDep,
    sku: Annotated[str | None, Query(max_length=SKU_MAX, pattern=PRINTABLE)] = None,
    q: Annotated[str | None, Query(max_length=100, pattern=PRINTABLE)] = None,
) -> Response:
    """Search SKUs; a SKU's history, forecast band, what-if form and explanation."""
    if not _signed_in(request):
        return _to_login(request)
    found = await run_in_threadpool(dashboard.search_skus, forecasts, q) if q else []
    if sku is None and len(found) == 1:
        sku = found[0]["sku"]
    detail = await run_in_threadpool(dashboard.sku_history, forecasts, sku) if sku else None
    status = 404 if sku and detail is None else 200
    context = {"q": q or "", "found": found, "sku": sku, "detail": detail}
    return _page(request, "sku.html", context, status=status)


@router.get("/totals")
async def totals(
    request: Request,
    service: AggregateDep,
    level: Annotated[str, Query(pattern="^(category|store)$")] = "category",
) -> Response:
    """Totals by category or store with their P10-P90 band."""
    if not _signed_in(request):
        return _to_login(request)
    groups = await run_in_threadpool(service.groups, level)
    keys = [{"key": k, "skus": len(v)} for k, v in groups.items()]
    return _page(request, "totals.html", {"level": level, "levels": TOTAL_LEVELS, "keys": keys})
