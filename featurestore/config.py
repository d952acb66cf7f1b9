"""One settings class, read by the CLI, training and the service alike."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings from the environment (prefix ``SALESFC_``) or a ``.env`` file."""

    model_config = SettingsConfigDict(env_prefix="SALESFC_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./data/salesfc.db",
        description="SQLAlchemy URL: a SQLite file (default) or postgresql+psycopg://...",
    )
    models_dir: Path = Path("./models")
    data_dir: Path = Path("./data")
    timezone: str = Field(default="UTC", description="Zone in which order timestamps become days")
    ingest_chunk_rows: int = Field(default=50_000, ge=1_000)
    max_reject_share: float = Field(default=0.05, ge=0.0, le=1.0)
    customer_id_key: SecretStr | None = Field(
        default=None,
        min_length=32,
        description=(
            "Key of the customer ids' pseudonyms (HMAC-SHA256), at least 32 characters; "
            "order files with customer ids are refused without it"
        ),
    )
    read_api_keys: list[SecretStr] = Field(default_factory=list)
    ops_api_keys: list[SecretStr] = Field(default_factory=list)
    ingest_api_keys: list[SecretStr] = Field(
        default_factory=list, description="Keys that may push orders (POST /v1/orders); ops too"
    )
    quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9])
    forecast_cache: bool = Field(
        default=True,
        description="Answer unchanged SKUs from cache and stored runs (false: always compute)",
    )
    push_process: bool = Field(
        default=True,
        description=(
            "Store pushed order lines (POST /v1/orders) in a process of each worker's own, so "
            "their validation holds no lock the forecasts need (false: in the worker)"
        ),
    )
    serve_window_mb: int = Field(
        default=256,
        ge=0,
        description=(
            "Per worker: MB of the in-memory history window of the whole catalogue that computed "
            "forecasts slice instead of reading SQL (~11 KB per SKU); a larger catalogue, or 0, "
            "reads the window from the database per request"
        ),
    )
    # A database that stops answering (packets dropped, not refused): docs/operations.md.
    db_connect_timeout_s: int = Field(
        default=5, ge=2, description="Seconds to open a PostgreSQL connection (libpq: 2 at least)"
    )
    db_statement_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description=(
            "Seconds a statement of the service may run: PostgreSQL cancels it and a server that "
            "stops answering is given up 1 s later (0: no limit; batch commands have none)"
        ),
    )
    db_pool_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds to wait for a free pooled connection"
    )
    db_keepalives_idle_s: int = Field(
        default=10,
        ge=1,
        description="Idle seconds before TCP keepalive probes (3, a third of it apart) start",
    )
    readyz_timeout_s: float = Field(
        default=2.0, gt=0, description="Seconds /readyz waits for the database before a 503"
    )
    selection_metric: str = "rmsse"
    dask_scheduler: str | None = Field(
        default=None,
        description=(
            "Dask scheduler of --engine dask (tcp://host:8786), or local for a LocalCluster "
            "sized to this machine; --scheduler overrides it"
        ),
    )
    # Drift (docs/operations.md, Live accuracy and drift): what starts a retrain, what falls back.
    drift_window_days: int = Field(
        default=14, ge=1, description="N: days of live error compared with the backtest's"
    )
    drift_margin: float = Field(
        default=0.2, ge=0.0, description="Retrain when live WAPE > backtest WAPE x (1 + margin)"
    )
    drift_bias_band: float = Field(
        default=0.15, ge=0.0, description="Retrain when live bias is outside +-band (a share)"
    )
    fallback_days: int = Field(
        default=7, ge=1, description="K: days in a row the champion loses to seasonal naive"
    )
    fallback_all_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Fall back for every SKU when this share of SKUs fails (else for those)",
    )
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(default=1, ge=1)
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _psycopg_driver(cls, value: str) -> str:
        """Route plain PostgreSQL URLs through psycopg 3, the driver we ship."""
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests clear the cache to override them."""
    return Settings()
