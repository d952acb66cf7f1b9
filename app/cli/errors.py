"""Anything a user can do wrong ends as one line on stderr: `error: what — why; what to do`.

`SalesfcGroup` wraps the whole command tree, so the console script and typer's CliRunner behave
the same. Usage errors stay typer's (exit 2); the project's error families exit 1; `--debug` or
SALESFC_DEBUG=1 lets the exception through with its traceback.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import typer.core
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from featurestore.ingest import IngestError
from training.bundle import BundleError
from training.errors import TrainingError
from training.options import InvalidOptions
from training.registry import RegistryError
from training.report import ReportError

EXIT_FAILED = 1
DEBUG_HINT = "(--debug shows the traceback)"
log = logging.getLogger("salesfc.cli")
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

# A driver's error that means "the tables are not there": SQLite's text, PostgreSQL's class
# (a missing database also "does not exist", but that is a connection problem).
_SQLITE_NO_TABLE = "no such table"
_PG_NO_TABLE = "UndefinedTable"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


def _database() -> str:
    """The configured database URL without its password, or a note that it is unreadable."""
    from featurestore.config import get_settings

    try:
        return make_url(get_settings().database_url).render_as_string(hide_password=True)
    except Exception:  # the settings themselves may be what failed
        return "the configured database"


def describe(exc: BaseException) -> str | None:
    """The one line for an error a user can cause, or None for one the CLI does not know."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig if exc.orig is not None else exc
        why = _first_line(orig)
        if _SQLITE_NO_TABLE in why or type(orig).__name__ == _PG_NO_TABLE:
            return (
                f"the feature store at {_database()} is not migrated — {why}; "
                "run `salesfc db upgrade` first"
            )
        return (
            f"cannot use the feature store at {_database()} — {why}; check "
            "SALESFC_DATABASE_URL and that the database is running, then `salesfc db upgrade`"
        )
    if isinstance(exc, ArgumentError):
        return f"SALESFC_DATABASE_URL is not a database URL — {_first_line(exc)}"
    if isinstance(exc, ValidationError):
        fields = ", ".join(
            "SALESFC_" + str(e["loc"][0]).upper() + f" ({e['msg']})" for e in exc.errors()
        )
        return f"invalid settings — {fields}; fix the environment or .env file"
    if isinstance(exc, IngestError):
        return f"ingestion failed — {exc}; the store is unchanged"
    if isinstance(exc, RegistryError | BundleError):
        return f"model bundle refused — {exc}; see `salesfc models list`"
    if isinstance(exc, TrainingError):
        return f"cannot run on this data — {exc}"
    if isinstance(exc, ReportError):
        return f"cannot write the report — {exc}"
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"cannot access{where} — {exc.strerror or exc}; check the path and permissions"
    if isinstance(exc, ValueError):
        return f"{exc} {DEBUG_HINT}"
    return None


def fail(message: str) -> NoReturn:
    """Print the one error line and exit with code 1."""
    err_console.print(f"[red]error:[/red] {message}", markup=True)
    raise typer.Exit(EXIT_FAILED)


def _debugging(ctx: typer.Context) -> bool:
    return bool(ctx.params.get("debug"))


class SalesfcGroup(typer.core.TyperGroup):
    """The root command: runs a subcommand and turns the errors users cause into one line."""

    # typer.Context is the public name of the (vendored) click context this method receives.
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise  # usage errors (exit 2) and deliberate exits
        except InvalidOptions as exc:  # a bad option value: a usage error, exit 2
            if _debugging(ctx):
                raise
            raise typer.BadParameter(str(exc), ctx) from exc
        except Exception as exc:
            if _debugging(ctx):
                raise
            line = describe(exc)
            if line is None:
                log.debug("unexpected error", exc_info=exc)
                line = (
                    f"unexpected {type(exc).__name__} — {_first_line(exc)}; this is a bug: "
                    f"run again with --debug and report the traceback"
                )
            fail(line)
