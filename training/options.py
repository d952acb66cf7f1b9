"""What a training run accepts, written once: the CLI, the retrain API and its worker build it here.

``TrainOptions`` holds the defaults; ``train_options`` turns the user's choices (a plain mapping,
``None`` meaning "the default") into one, so no caller repeats a default or a validation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, get_args

from training.backtest import SELECTION_METRICS
from training.estimators import model_names
from training.forecaster import DEFAULT_FLOORS, DEFAULT_STRATEGY, Strategy

# The baselines are cheap and strong on short, noisy histories: the champion must beat them
# (training.selection ships the backtest's best, baselines and the ensemble included).
# The 28-day mean and TSB forecast with the SKU's weekday shape (a flat 56-day mean, SES and
# Croston stay flat): seven baselines, as before the shapes, since each candidate's backtest
# rows are held until the ranking (two more cost ~0.5 GB at M5 scale: docs/benchmarks.md).
DEFAULT_MODELS = (
    "seasonal_naive",
    "moving_average_dow",
    "moving_average_56",
    "ses",
    "ses_dow",
    "croston",
    "tsb_dow",
    "lgbm_tweedie",
)
DEFAULT_ENSEMBLE_TOP = 3
STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass
class TrainOptions:
    """What `salesfc train` / `salesfc backtest` and POST /v1/retrain accept."""

    cutoff: dt.date | None = None
    models: Sequence[str] = DEFAULT_MODELS
    strategy: Strategy = DEFAULT_STRATEGY
    horizon: int = 28
    folds: int = 2
    step: int | None = None
    metric: str = "rmsse"
    ensemble_top: int = DEFAULT_ENSEMBLE_TOP
    n_estimators: int | None = None
    # multi only: the stages' lag floors (e.g. (1, 14, 28): day 1 from yesterday's units);
    # None keeps the forecaster's default stages (training.forecaster.DEFAULT_FLOORS).
    lag_floors: tuple[int, ...] | None = None
    cold_start_share: float = 0.1
    model_params: dict[str, Any] = field(default_factory=dict)

    @property
    def floors(self) -> tuple[int, ...] | None:
        """The multi strategy's stages: the chosen lag floors, else the forecaster's default."""
        return DEFAULT_FLOORS if self.lag_floors is None else self.lag_floors


class InvalidOptions(ValueError):
    """A choice cannot make training options; the message names it and what is accepted."""


def train_options(choices: Mapping[str, Any]) -> TrainOptions:
    """The options for these choices; a missing or None choice takes TrainOptions' default.

    ``cutoff`` may be a date or an ISO string (JSON job parameters), ``models`` a sequence or a
    comma-separated string (the CLI); no models named means the default list.
    """
    names = {f.name for f in fields(TrainOptions)}
    unknown = sorted(set(choices) - names)
    if unknown:
        raise InvalidOptions(f"unknown training option(s): {', '.join(unknown)}")
    given = {k: v for k, v in choices.items() if v is not None}
    if "cutoff" in given:
        given["cutoff"] = _date(given["cutoff"])
    if "models" in given:
        given["models"] = valid_models(given["models"])
    if "metric" in given:
        given["metric"] = valid_metric(given["metric"])
    if given.get("strategy", DEFAULT_STRATEGY) not in STRATEGIES:
        raise InvalidOptions(f"strategy must be {', '.join(STRATEGIES[:-1])} or {STRATEGIES[-1]}")
    if "lag_floors" in given:
        floors = valid_floors(given["lag_floors"], int(given.get("horizon", 28)))
        if floors and given.get("strategy", DEFAULT_STRATEGY) != "multi":
            raise InvalidOptions("lag floors apply to the multi strategy only")
        given["lag_floors"] = floors or None
    for name in ("horizon", "folds", "step", "ensemble_top", "n_estimators"):
        if name in given:
            given[name] = int(given[name])
    return TrainOptions(**given)


def _date(value: dt.date | str) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidOptions(f"{value!r} is not an ISO date (YYYY-MM-DD)") from exc


def valid_models(value: str | Sequence[str]) -> list[str]:
    """The named candidates (the default list if none), refusing a name no model family has."""
    items = value.split(",") if isinstance(value, str) else value
    names = [m.strip() for m in items if m.strip()] or list(DEFAULT_MODELS)
    known = model_names()
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise InvalidOptions(
            f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return names


def valid_floors(value: str | Sequence[int], horizon: int) -> tuple[int, ...]:
    """Lag floors for the multi strategy: positive days, increasing, the last at most the
    horizon (the horizon closes the last stage anyway); "" or [] keeps the default stages."""
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        floors = tuple(int(str(f).strip()) for f in items if str(f).strip())
    except ValueError as exc:
        raise InvalidOptions(f"lag floors must be whole days, got {value!r}") from exc
    if any(f < 1 or f > horizon for f in floors):
        raise InvalidOptions(f"lag floors must be between 1 and the horizon ({horizon})")
    if list(floors) != sorted(set(floors)):
        raise InvalidOptions("lag floors must be increasing, e.g. 1,14,28")
    return floors


def valid_metric(value: str) -> str:
    """A metric the backtest can rank candidates by (all lower-is-better)."""
    if value not in SELECTION_METRICS:
        raise InvalidOptions(
            f"metric {value!r} cannot rank models; choose from {', '.join(SELECTION_METRICS)}"
        )
    return value
