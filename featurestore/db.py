"""Engines and sessions for the feature store (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import psycopg
from psycopg.abc import RV, PQGen
from psycopg.errors import _WaitTimeout
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.orm import Session, sessionmaker

from featurestore.config import Settings, get_settings

# A statement of a server that stops answering is given up this long after PostgreSQL itself
# would have cancelled it (statement_timeout): a slow but live server always answers first.
ANSWER_GRACE_S = 1.0
# Unanswered TCP keepalive probes after which an idle connection is dead.
KEEPALIVES_COUNT = 3


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection that stops waiting for a server that stops answering.

    libpq waits for an answer as long as the socket stays open: when packets are dropped rather
    than refused, that is until TCP gives up (keepalives only help an idle connection, and a
    proxy or load balancer in between keeps the socket open regardless). Every wait of this
    connection has a deadline instead: ``short_wait`` for pings, commits and fetches,
    ``statement_wait`` while a statement runs (the engine's cursor events switch between them).
    A wait past its deadline closes the connection, which SQLAlchemy takes for a disconnect: it
    drops this connection and every older one of the pool, so the service recovers by itself.
    """

    short_wait: float | None = None
    statement_wait: float | None = None
    in_statement: bool = False

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        if timeout is not None:  # psycopg's own bounded waits (cancel, notifies) keep theirs
            return super().wait(gen, interval, timeout)
        limit = self.statement_wait if self.in_statement else self.short_wait
        try:
            return super().wait(gen, interval, limit)
        except _WaitTimeout:
            # Cut off mid-protocol, the connection can never be used again.
            self.pgconn.finish()
            raise psycopg.OperationalError(
                f"the database did not answer within {limit:g} s"
            ) from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def postgres_connect_args(settings: Settings, *, service: bool) -> dict[str, Any]:
    """libpq parameters: connect timeout, TCP keepalives, and the service's statement timeout."""
    idle = settings.db_keepalives_idle_s
    interval = max(1, idle // 3)
    args: dict[str, Any] = {
        "connect_timeout": settings.db_connect_timeout_s,
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": KEEPALIVES_COUNT,
        # Data left unacknowledged this long means a dead peer too (milliseconds).
        "tcp_user_timeout": (idle + interval * KEEPALIVES_COUNT) * 1000,
    }
    if service and settings.db_statement_timeout_s > 0:
        args["options"] = f"-c statement_timeout={round(settings.db_statement_timeout_s * 1000)}"
    return args


def _bound_waits(engine: Engine, settings: Settings) -> None:
    short = float(settings.db_connect_timeout_s)
    limit = settings.db_statement_timeout_s
    statement = limit + ANSWER_GRACE_S if limit > 0 else None

    @event.listens_for(engine, "do_connect")
    def _connect(
        _dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
    ) -> BoundedConnection:
        conn = BoundedConnection.connect(*cargs, **cparams)
        conn.short_wait, conn.statement_wait = short, statement
        return conn

    def _mark(cursor: Any, running: bool) -> None:
        conn = getattr(cursor, "connection", None)
        if isinstance(conn, BoundedConnection):
            conn.in_statement = running

    @event.listens_for(engine, "before_cursor_execute")
    def _start(_conn: Any, cursor: Any, *_: Any) -> None:
        _mark(cursor, True)

    @event.listens_for(engine, "after_cursor_execute")
    def _end(_conn: Any, cursor: Any, *_: Any) -> None:
        _mark(cursor, False)

    @event.listens_for(engine, "handle_error")
    def _failed(context: ExceptionContext) -> None:
        _mark(getattr(context, "cursor", None), False)  # none while connecting


def make_engine(url: str, settings: Settings | None = None, *, service: bool = False) -> Engine:
    """Build an engine; SQLite files get their folder, WAL and enforced foreign keys.

    Every engine has the settings' connect and pool-checkout timeouts and, on PostgreSQL, TCP
    keepalives. ``service`` engines (the API's) also bound each statement
    (``db_statement_timeout_s``) and every other wait (``BoundedConnection``); batch commands
    (ingest's COPY, train, forecast-all) wait as long as a live server needs, and TCP ends their
    connections to a dead one.
    """
    cfg = settings or get_settings()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # No network to lose: a pooled file connection only waits for another checkout.
        pooled = {"pool_timeout": cfg.db_pool_timeout_s} if path != ":memory:" else {}
        engine = create_engine(url, connect_args={"timeout": 30}, **pooled)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_timeout=cfg.db_pool_timeout_s,
        connect_args=postgres_connect_args(cfg, service=service),
    )
    if service and url.startswith("postgresql+psycopg"):
        _bound_waits(engine, cfg)
    return engine


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One engine per URL per process."""
    return make_engine(url)


def get_engine() -> Engine:
    """The engine for the configured database."""
    return engine_for(get_settings().database_url)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    factory = sessionmaker(bind=engine or get_engine(), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
