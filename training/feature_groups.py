"""Feature groups: how explanations aggregate the builder's features and what cold start drops."""

from __future__ import annotations

from training.features import CALENDAR_COLUMNS, CATEGORICAL, PROMO_COLUMNS

FEATURE_GROUPS = ("lags_trend", "price", "promotion", "calendar_events", "hierarchy")
# Features computed from the SKU's own sales: a SKU without history has none of them.
HISTORY_GROUP = "lags_trend"
_HISTORY_PREFIXES = ("lag_", "roll_", "ewm_", "zero_share_")
_HISTORY_NAMES = {"days_since_sale", "zero_run", "age"}
_PROMO_NAMES = {*PROMO_COLUMNS, "days_since_promo", "days_to_promo"}
_CALENDAR_NAMES = {"dow", "dom", "week", "month", *CALENDAR_COLUMNS}


def feature_group(name: str) -> str:
    """The group of one of the builder's feature names."""
    if name.startswith(_HISTORY_PREFIXES) or name in _HISTORY_NAMES:
        return "lags_trend"
    if name.startswith("price"):
        return "price"
    if name in _PROMO_NAMES:
        return "promotion"
    if name in _CALENDAR_NAMES:
        return "calendar_events"
    if name in CATEGORICAL or name.startswith("te_"):
        return "hierarchy"
    raise ValueError(f"feature {name!r} belongs to no group: add it to training.feature_groups")
