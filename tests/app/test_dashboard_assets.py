"""The dashboard's templates and assets ship in the package (a non-editable install has them)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

from app.routes.dashboard import ASSETS, STATIC, TEMPLATES

ROOT = Path(__file__).resolve().parents[2]


def test_package_data_covers_every_template_and_asset() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["app"]
    app_dir = ROOT / "app"
    files = [p for d in ("templates", "static") for p in (app_dir / d).rglob("*") if p.is_file()]
    assert files
    for path in files:
        rel = path.relative_to(app_dir).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel


def test_every_static_file_is_served_and_every_served_name_exists() -> None:
    assert sorted(ASSETS) == sorted(p.name for p in STATIC.iterdir() if p.is_file())
    names = TEMPLATES.env.list_templates()
    for page in ("base", "login", "overview", "accuracy", "sku", "totals"):
        assert f"{page}.html" in names
