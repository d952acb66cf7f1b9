"""Request and response bodies of the API (pydantic v2), with examples for the OpenAPI docs."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.errors import InvalidRequest
from featurestore.ingest.lines import MAX_LINES
from training.backtest import SELECTION_METRICS
from training.options import TrainOptions, valid_floors, valid_metric, valid_models

MAX_BATCH = 1000
# Price changes and promotions per what-if: one of each for every SKU of a full batch.
MAX_CHANGES = MAX_BATCH
# No control characters (a NUL byte cannot even be sent to PostgreSQL): refused as a 422 before
# the database is asked. Identifiers (SKUs, cursors) are otherwise free-form.
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
SKU_MAX = 64
SkuId = Annotated[str, StringConstraints(min_length=1, max_length=SKU_MAX, pattern=PRINTABLE)]
QUANTILES_RANGE = "quantiles must lie strictly between 0 and 1"


class PriceChange(BaseModel):
    """A shelf price for a SKU from one day to another (inclusive) in a what-if scenario."""

    sku: SkuId
    start: dt.date
    end: dt.date
    price: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> PriceChange:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self


class PromotionPlan(BaseModel):
    """A promotion on a SKU in a what-if scenario."""

    sku: SkuId
    start: dt.date
    end: dt.date
    depth: float = Field(default=0.1, ge=0, le=1, description="discount share, 0..1")
    display: bool = False
    mailer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> PromotionPlan:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self


class Scenario(BaseModel):
    """What-if inputs: planned prices and promotions that replace the store's plans."""

    prices: list[PriceChange] = Field(default_factory=list, max_length=MAX_CHANGES)
    promotions: list[PromotionPlan] = Field(default_factory=list, max_length=MAX_CHANGES)

    @property
    def changes(self) -> bool:
        """Whether it changes anything (an empty scenario is a plain forecast)."""
        return bool(self.prices or self.promotions)


def parse_pairs(raw: bytes) -> dict[str, str] | None:
    """A raw query string's parameters, or None if one is repeated (the route then answers)."""
    # Commas are all that clients usually escape ("0.1%2C0.9"); they separate neither pairs
    # nor names from values, so they may be unescaped first.
    text = raw.decode("latin-1").replace("%2C", ",").replace("%2c", ",")
    pairs: list[tuple[str, str]]
    if "%" in text or "+" in text:
        pairs = parse_qsl(text, True)
    else:  # what parse_qsl gives when there is nothing to unquote, at a fraction of its cost
        pairs = []
        for part in text.split("&"):
            if part:
                name, _, value = part.partition("=")
                pairs.append((name, value))
    found = dict(pairs)
    return found if len(found) == len(pairs) else None


def parse_query(raw: bytes) -> tuple[int | None, list[float] | None] | None:
    """A GET forecast's (horizon, quantiles) from its raw query string, or None unless plainly
    valid (a repeated or malformed parameter: the route then validates and answers)."""
    pairs = parse_pairs(raw)
    if pairs is None:
        return None
    horizon = None
    quantiles = None
    for name, value in pairs.items():
        if name == "horizon":
            if not value.isdigit() or int(value) < 1:
                return None
            horizon = int(value)
        elif name == "quantiles":
            quantiles = value
    try:
        return horizon, parse_quantiles(quantiles)
    except InvalidRequest:
        return None


def parse_quantiles(raw: str | None) -> list[float] | None:
    """Levels from "0.1,0.5,0.9" (None if absent); InvalidRequest if not numbers in (0, 1)."""
    if raw is None:
        return None
    try:
        levels = [float(q) for q in raw.split(",") if q.strip()]
    except ValueError as exc:
        raise InvalidRequest(f"quantiles must be numbers, got {raw!r}") from exc
    if not levels or not _in_range(levels):
        raise InvalidRequest(QUANTILES_RANGE)
    return levels


def _in_range(levels: list[float]) -> bool:
    return all(0 < q < 1 for q in levels)


class ForecastRequest(BaseModel):
    """Several SKUs in one vectorised prediction, optionally under a what-if scenario."""

    skus: list[SkuId] = Field(min_length=1, max_length=MAX_BATCH)
    horizon: int | None = Field(default=None, ge=1)
    quantiles: list[float] | None = None
    scenario: Scenario | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "skus": ["FOODS_3_090_CA_1"],
                    "horizon": 28,
                    "quantiles": [0.1, 0.5, 0.9],
                    "scenario": {
                        "prices": [
                            {
                                "sku": "FOODS_3_090_CA_1",
                                "start": "2016-04-25",
                                "end": "2016-05-08",
                                "price": 1.0,
                            }
                        ]
                    },
                }
            ]
        }
    }

    @field_validator("quantiles")
    @classmethod
    def _levels(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not _in_range(value):
            raise ValueError(QUANTILES_RANGE)
        return value

    @property
    def what_if(self) -> bool:
        """Whether a scenario changes anything (else the forecast is a plain, cacheable one)."""
        return self.scenario is not None and self.scenario.changes


class ForecastDay(BaseModel):
    """One forecast day: the mean and the requested quantiles (p10, p50, p90 ...)."""

    date: dt.date
    mean: float
    quantiles: dict[str, float]
    baseline_mean: float | None = Field(default=None, description="without the scenario")
    delta: float | None = Field(default=None, description="scenario mean minus baseline mean")


class SkuForecast(BaseModel):
    """A SKU's forecast for the coming days."""

    sku: str
    cold_start: bool = Field(description="answered from attributes: too little history")
    days: list[ForecastDay]
    note: str | None = Field(
        default=None,
        description="why fewer days than the horizon were returned (a launch or an end inside "
        "the window); null when every day is there",
        examples=["10 of 14 days: launches 2016-04-29, nothing is forecast before it"],
    )
    fallback: bool = Field(
        default=False,
        description="made by the fallback baseline: the champion lost to seasonal naive on "
        "this SKU in live accuracy (GET /v1/events), until a new champion is promoted",
    )


class ForecastResponse(BaseModel):
    """Forecasts, the model version that made them and the last day of data used."""

    model_version: str
    data_until: dt.date
    horizon: int
    scenario: bool = False
    forecasts: list[SkuForecast]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: bool
    model_version: str | None
    detail: str | None = None
    fallback: dict[str, Any] | None = Field(
        default=None,
        description="the fallback in force for this champion (SKUs or all, baseline, since)",
    )


class ModelInfo(BaseModel):
    """A bundle in the registry."""

    version: str
    created_at: str
    champion: bool
    data_start: str
    data_end: str
    cutoff: str
    sku_count: int
    model: str | None
    selection_metric: str | None
    selection_score: float | None


class ModelList(BaseModel):
    champion: str | None
    models: list[ModelInfo]
    history: list[dict[str, object]]


class PromoteRequest(BaseModel):
    reason: str = Field(default="", max_length=500)


_TRAIN = TrainOptions()  # the defaults, written in training.options


class RetrainRequest(BaseModel):
    """What to retrain: by default every candidate of the default list on all data."""

    force: bool = Field(
        default=False,
        description="promote even if the backtest is worse or the gate cannot compare the scores",
    )
    models: list[str] | None = None
    cutoff: dt.date | None = None
    folds: int = Field(default=_TRAIN.folds, ge=1, le=10)
    horizon: int = Field(default=_TRAIN.horizon, ge=1, le=366)
    n_estimators: int | None = Field(default=None, ge=1, le=5000)
    metric: str = Field(default=_TRAIN.metric, examples=list(SELECTION_METRICS))
    lag_floors: list[int] | None = Field(
        default=None,
        max_length=28,
        description="the multi strategy's lag floors, e.g. [1, 14, 28]: day 1 reads yesterday",
        examples=[[1, 14, 28]],
    )

    # Checked here, not in the worker: a request the job would fail on answers 422 and queues
    # nothing (InvalidOptions is a ValueError, which pydantic reports per field).
    @field_validator("models")
    @classmethod
    def _known_models(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else valid_models(value)

    @field_validator("metric")
    @classmethod
    def _rankable_metric(cls, value: str) -> str:
        return valid_metric(value)

    @model_validator(mode="after")
    def _floors_within_horizon(self) -> RetrainRequest:
        if self.lag_floors is not None:
            self.lag_floors = list(valid_floors(self.lag_floors, self.horizon)) or None
        return self


class JobInfo(BaseModel):
    """A background job's state."""

    id: str
    kind: str
    status: str
    progress: float
    message: str | None
    params: dict[str, object] | None
    result: dict[str, object] | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class ExplainDay(BaseModel):
    """One day: baseline + the feature groups' contributions (units) = the forecast."""

    date: dt.date
    baseline: float
    contributions: dict[str, float] = Field(
        description="lags_trend, price, promotion, calendar_events, hierarchy (units)"
    )
    forecast: float


class ExplainResponse(BaseModel):
    """Per-day contributions of feature groups to a SKU's forecast."""

    sku: str
    model_version: str
    data_until: dt.date
    method: str
    days: list[ExplainDay]


# ---------------------------------------------------------------- inventory (issue #13)

MAX_INVENTORY_BATCH = 1000
SERVICE_LEVEL_LOW, SERVICE_LEVEL_HIGH = 0.5, 0.999  # training.inventory.SERVICE_LEVEL_RANGE


class InventoryItem(BaseModel):
    """One SKU's inputs: its lead time (else the product's ``lead_time_days``) and its stock."""

    sku: SkuId
    lead_time_days: int | None = Field(
        default=None, ge=1, description="days from order to delivery; default: the product's"
    )
    review_days: int = Field(default=7, ge=0, description="days between two orders")
    service_level: float = Field(
        default=0.95,
        gt=SERVICE_LEVEL_LOW,
        lt=SERVICE_LEVEL_HIGH,
        description="cycle service level: share of cycles without a stock-out",
    )
    on_hand: float = Field(default=0.0, ge=0)
    on_order: float = Field(default=0.0, ge=0)


class InventoryRequest(BaseModel):
    """Up to 1,000 SKUs, each with its own lead time and stock."""

    items: list[InventoryItem] = Field(min_length=1, max_length=MAX_INVENTORY_BATCH)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "items": [
                        {
                            "sku": "FOODS_3_090_CA_1",
                            "lead_time_days": 7,
                            "review_days": 7,
                            "service_level": 0.95,
                            "on_hand": 12,
                            "on_order": 0,
                        }
                    ]
                }
            ]
        }
    }


class LeadTimeDemandBody(BaseModel):
    """Demand over lead time + review: its mean and quantiles (whole units; p95 ...)."""

    mean: float
    quantiles: dict[str, float]


class InventoryDecision(BaseModel):
    """A SKU's (R, S) policy at the requested service level and the order it suggests now."""

    sku: str
    model_version: str
    data_until: dt.date
    lead_time_days: int
    review_days: int
    service_level: float
    cold_start: bool = Field(description="forecast from attributes: a wider distribution")
    lead_time_demand: LeadTimeDemandBody
    safety_stock: float = Field(description="order_up_to minus the mean demand")
    reorder_point: float = Field(description="service-level quantile over the lead time alone")
    order_up_to: float = Field(description="service-level quantile over lead time + review")
    on_hand: float
    on_order: float
    suggested_order: float = Field(description="max(0, order_up_to - on_hand - on_order)")


class InventoryResponse(BaseModel):
    """Decisions for several SKUs, from one champion and one data date."""

    model_version: str
    data_until: dt.date
    items: list[InventoryDecision]


# POST /v1/orders: lines with the columns of `salesfc ingest orders` (docs/api.md).
OrderValue = str | int | float | bool | None


class OrdersRequest(BaseModel):
    """A batch of order lines, each an object with the order file's columns."""

    model_config = ConfigDict(extra="forbid")

    lines: list[dict[str, OrderValue]] = Field(
        min_length=1,
        max_length=MAX_LINES,
        description=(
            "order_id, line, sku, customer_id, ordered_at, quantity, unit_price, discount, "
            "status: the same columns and rules as `salesfc ingest orders`"
        ),
        examples=[
            [
                {
                    "order_id": "SO-100234",
                    "line": 1,
                    "sku": "FOODS_3_090_CA_1",
                    "customer_id": "C-48213",
                    "ordered_at": "2016-04-24T15:04:00Z",
                    "quantity": 2,
                    "unit_price": 1.25,
                    "discount": 0,
                    "status": "completed",
                }
            ]
        ],
    )


class LineRejectBody(BaseModel):
    """Why a line was refused: its index in ``lines`` (from 0), the column and the reason."""

    index: int
    column: str
    reason: str


class OrdersResponse(BaseModel):
    """What a batch did: lines received; stored ones new, unchanged or updated; refused ones."""

    received: int
    inserted: int
    unchanged: int
    updated: int
    rejected: list[LineRejectBody] = Field(
        default_factory=list, description="with ?partial=true: the lines left out"
    )
    skus_changed: list[str] = Field(
        default_factory=list,
        description="SKUs whose daily sales changed: their next forecast reflects the batch",
    )


class AccuracyGroup(BaseModel):
    """Live accuracy of one group (model version; horizon day; segment) over its scored runs."""

    model_version: str
    horizon: int | None = Field(default=None, description="by=horizon: days after the run")
    level: str | None = Field(
        default=None, description="by=segment: category, store or demand_class"
    )
    segment: str | None = Field(default=None, description="by=segment: the segment's value")
    runs: int = Field(description="stored forecast runs scored")
    first_as_of: dt.date
    last_as_of: dt.date
    rows: int = Field(description="SKU-days with actuals")
    actual_units: float
    wape: float | None
    rmsse: float | None
    bias: float | None = Field(description="sum(forecast - actual) / sum(actual)")
    mae: float | None
    coverage: float | None = Field(description="share of actuals inside P10..P90")
    naive_wape: float | None = Field(description="seasonal naive on the same SKU-days")
    naive_rmsse: float | None
    naive_bias: float | None
    naive_mae: float | None
    wape_vs_naive: float | None = Field(description="1 - WAPE / naive WAPE: above 0 is better")


class AccuracyResponse(BaseModel):
    """Stored live accuracy of forecast runs made from ``since`` on, grouped by ``by``."""

    since: dt.date | None
    by: str
    groups: list[AccuracyGroup]


class DriftEventBody(BaseModel):
    """One drift decision."""

    id: int
    at: dt.datetime
    kind: str = Field(
        description="checked, insufficient_data, retrain_started, retrain_skipped, "
        "fallback_on, fallback_pending, fallback_off"
    )
    model_version: str | None
    job_id: str | None
    detail: dict[str, Any]


class EventsResponse(BaseModel):
    """Drift decisions, newest first."""

    events: list[DriftEventBody]


# ---------------------------------------------------------------- totals (issue #15)


class AggregateDay(BaseModel):
    """One day of a total: the sum of its SKUs' means and quantiles of the total itself."""

    date: dt.date
    mean: float = Field(description="the sum of the SKUs' means (coherent with /v1/forecast)")
    quantiles: dict[str, float] = Field(description="whole units, from joint sample paths")


class AggregatePeriod(BaseModel):
    """The total's mean over every day of the horizon (the sum of the daily means)."""

    start: dt.date
    end: dt.date
    mean: float


class AggregateResponse(BaseModel):
    """Daily totals of a category, store, category x store or the whole catalogue."""

    level: str = Field(examples=["category"])
    key: str = Field(examples=["FOODS"])
    model_version: str
    data_until: dt.date
    horizon: int
    skus: int = Field(description="active SKUs in the total")
    cold_start_skus: int
    paths: int = Field(description="joint sample paths behind the quantiles")
    days: list[AggregateDay]
    period: AggregatePeriod


class AggregateKey(BaseModel):
    key: str
    skus: int


class AggregateKeys(BaseModel):
    """The groups of a level and their sizes."""

    level: str
    keys: list[AggregateKey]
