"""Vectorised validation of ingested rows: parse each column, apply the entity's rules, split.

A chunk arrives with the entity's column names (after ``--map``) holding text (CSV) or typed
values (Parquet, generated frames). ``check_chunk`` returns the accepted rows, typed and with
defaults filled, and one reject per refused row: its 1-based row number, a reason from the
constants below, the offending column and value. When a row has several problems, the first
in column order is reported. Nothing here touches the database.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.pseudonyms import CustomerKeyMissing, Pseudonymiser
from featurestore.schema import FREE, ORDER_STATUSES, PRODUCT_STATUSES, Column, Entity

MISSING = "missing value"
TOO_LONG = "string too long"
NOT_NUMBER = "not a number"
NOT_FINITE = "NaN or infinite number"
NOT_INTEGER = "not an integer"
NEGATIVE = "negative value"
NOT_FRACTION = "not between 0 and 1"
BAD_DATE = "unparseable date"
BAD_TIMESTAMP = "unparseable timestamp"
BAD_BOOL = "not a boolean"
BAD_JSON = "not a JSON object"
BAD_STATUS = "unknown status"
FUTURE = "date in the future"
UNKNOWN_SKU = "unknown sku"
DUPLICATE = "duplicate key in file"
UNDECODABLE = "undecodable bytes"
MALFORMED = "wrong number of fields"
DISCOUNT_ABOVE_VALUE = "discount amount above the line's value"
DISCOUNT_WITHOUT_VALUE = "discount amount on a line without a price"
END_BEFORE_START = "end_date before start_date"
NO_PROMOTION_TARGET = "promotion needs a sku or a category"

REJECT_COLUMNS = ("row", "reason", "column", "value")
VALUE_PREVIEW = 200

_NAN_INF_WORDS = frozenset(
    {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)
_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
# An explicit UTC offset or Z after a time of day ("2024-01-05T10:00:00+02:00").
_AWARE = r"[T ]\d{2}:\d{2}.*(?:Z|[+-]\d{2}(?::?\d{2})?)$"

Mask = npt.NDArray[np.bool_]
Rows = npt.NDArray[np.int64]


class PlanError(ValueError):
    """The source's columns cannot be matched to the entity's."""


DiscountMode = Literal["fraction", "amount"]


@dataclass(frozen=True)
class SourceOptions:
    """How to read a source beyond its column mapping (``salesfc ingest`` options)."""

    ignore: tuple[str, ...] = ()  # source columns read as if absent
    discount: DiscountMode = "fraction"  # orders: discount as a fraction or a currency amount
    zero_price_demand: bool = False  # orders: zero-price lines count as demand

    def fingerprint(self, entity: Entity, pseudonyms: Pseudonymiser | None) -> dict[str, Any]:
        """What changes what a file loads as, beyond its bytes and mapping (folded into its
        checksum): the options given, and the id of the key its personal data takes (after a
        key rotation the same file loads again, with the new key's pseudonyms)."""
        out: dict[str, Any] = {}
        if entity.private and pseudonyms is not None:
            out["key_id"] = pseudonyms.key_id
        if self.ignore:
            out["ignore"] = sorted(self.ignore)
        if self.discount != "fraction":
            out["discount"] = self.discount
        if self.zero_price_demand:
            out["zero_price_demand"] = True
        return out


class LineNumbers:
    """Line numbers within each order across a file's chunks (for sources without ``line``).

    Only a 64-bit hash and a count per order stay in memory: a collision of two orders' hashes
    leaves a gap in their numbers, never a wrong key (their order ids differ).
    """

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)  # sorted
        self.counts = np.empty(0, dtype=np.int64)

    def number(self, order_ids: pd.Series) -> npt.NDArray[np.int64]:
        """1, 2, ... per order in row order, continuing where earlier chunks stopped."""
        hashed = pd.util.hash_array(order_ids.astype(object).to_numpy())
        uniq, inverse = np.unique(hashed, return_inverse=True)
        within = pd.Series(inverse).groupby(inverse).cumcount().to_numpy(dtype=np.int64)
        at = np.searchsorted(self.keys, uniq)
        inside = at < len(self.keys)
        known = np.zeros(len(uniq), dtype=bool)
        known[inside] = self.keys[at[inside]] == uniq[inside]
        before = np.zeros(len(uniq), dtype=np.int64)
        before[known] = self.counts[at[known]]
        added = np.bincount(inverse, minlength=len(uniq)).astype(np.int64)
        self.counts[at[known]] += added[known]
        self.keys = np.insert(self.keys, at[~known], uniq[~known])
        self.counts = np.insert(self.counts, at[~known], added[~known])
        return before[inverse] + within + 1


@dataclass(frozen=True)
class ColumnPlan:
    """Which source column feeds each entity column, and what the source has beyond them."""

    sources: dict[str, str]  # entity column -> source column
    extras: tuple[str, ...]  # source columns no entity column takes

    @property
    def present(self) -> frozenset[str]:
        return frozenset(self.sources)


@dataclass(frozen=True)
class Context:
    """What validation needs to know beyond the rows themselves."""

    today: date
    timezone: str
    known_skus: pd.Index | None  # None: no SKU check (products)
    present: frozenset[str]  # entity columns the source has
    options: SourceOptions = field(default_factory=SourceOptions)
    pseudonyms: Pseudonymiser | None = None  # None: no key, so no customer ids accepted
    lines: LineNumbers = field(default_factory=LineNumbers)  # one file's order line numbers


@dataclass
class Checked:
    """Accepted rows (typed, defaults filled, ``_row`` first) and the rejected ones."""

    frame: pd.DataFrame
    rejects: pd.DataFrame = field(default_factory=lambda: empty_rejects())


def empty_rejects() -> pd.DataFrame:
    """A reject frame without rows."""
    return pd.DataFrame(
        {
            "row": pd.Series(dtype="int64"),
            "reason": pd.Series(dtype=object),
            "column": pd.Series(dtype=object),
            "value": pd.Series(dtype=object),
        }
    )


def make_rejects(rows: Rows, reason: str, column: str, values: Iterable[Any]) -> pd.DataFrame:
    """Rejects for ``rows`` sharing one reason and column."""
    return pd.DataFrame(
        {
            "row": np.asarray(rows, dtype=np.int64),
            "reason": np.full(len(rows), reason, dtype=object),
            "column": np.full(len(rows), column, dtype=object),
            "value": np.asarray([_preview(v) for v in values], dtype=object),
        }
    )


def fold(name: str) -> str:
    """A column name without case or separators: ``UnitPrice``, ``unit price`` -> ``unitprice``."""
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _find(name: str, found: Sequence[str], what: str) -> str | None:
    """The source column ``name`` names: itself, else the one column equal once folded."""
    if name in found:
        return name
    hits = [c for c in found if fold(c) == fold(name)]
    if len(hits) > 1:
        raise PlanError(
            f"{what} {name!r} matches several source columns ({', '.join(hits)}); "
            "name one with --map"
        )
    return hits[0] if hits else None


def resolve_columns(
    entity: Entity,
    found: Sequence[str],
    mapping: Mapping[str, str] | None = None,
    ignore: Sequence[str] = (),
) -> ColumnPlan:
    """Match source columns to the entity's: ``mapping`` first, then by name ignoring case and
    separators, then aliases; ``ignore`` names source columns to read as if absent."""
    names = [c.name for c in entity.columns]
    mapping = dict(mapping or {})
    found = list(found)
    dupes = sorted({c for c in found if found.count(c) > 1})
    if dupes:
        raise PlanError(f"duplicate column name(s) in the source: {', '.join(dupes)}")
    ignored: list[str] = []
    for name in ignore:
        hit = _find(name, found, "--ignore")
        if hit is None:
            raise PlanError(
                f"--ignore names {name!r}, not a column of the source; "
                f"columns found: {', '.join(found)}"
            )
        ignored.append(hit)
    unknown = sorted(set(mapping) - set(names))
    if unknown:
        raise PlanError(
            f"--map names unknown {entity.name} column(s) {', '.join(unknown)}; "
            f"{entity.name} columns are: {', '.join(names)}"
        )
    absent = sorted(src for src in mapping.values() if src not in found or src in ignored)
    if absent:
        raise PlanError(
            f"--map source column(s) {', '.join(absent)} not in the source (or ignored); "
            f"columns found: {', '.join(found)}"
        )
    sources: dict[str, str] = dict(mapping)
    taken = set(mapping.values()) | set(ignored)
    free = [c for c in found if c not in taken]
    for name in names:
        if name in sources:
            continue
        candidates = [name, *(a for a, target in entity.aliases.items() if target == name)]
        for candidate in candidates:
            hit = _find(candidate, [c for c in free if c not in taken], "column")
            if hit is not None:
                sources[name] = hit
                taken.add(hit)
                break
    missing = [n for n in entity.required if n not in sources]
    if missing:
        raise PlanError(
            f"missing required column(s) for {entity.name}: {', '.join(missing)}; "
            f"columns found: {', '.join(found) or '(none)'}"
        )
    return ColumnPlan(sources, tuple(c for c in found if c not in taken))


class _Verdict:
    """The first reason each row fails for (rows flagged earlier keep their reason)."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows
        self.bad: Mask = np.zeros(len(rows), dtype=bool)
        self.parts: list[pd.DataFrame] = []

    def flag(self, mask: Any, reason: str, column: str, values: pd.Series) -> None:
        hit = np.asarray(mask, dtype=bool) & ~self.bad
        if not hit.any():
            return
        self.bad |= hit
        self.parts.append(make_rejects(self.rows[hit], reason, column, values.to_numpy()[hit]))

    def rejects(self) -> pd.DataFrame:
        if not self.parts:
            return empty_rejects()
        return pd.concat(self.parts, ignore_index=True).sort_values("row", kind="stable")


def _preview(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    text = str(value)
    return text if len(text) <= VALUE_PREVIEW else text[: VALUE_PREVIEW - 1] + "…"


def _is_text(s: pd.Series) -> bool:
    return bool(pd.api.types.is_string_dtype(s.dtype) or s.dtype == object)


def _as_text(s: pd.Series) -> pd.Series:
    """Stripped text with NaN for missing or blank cells, whatever came in."""
    if not (pd.api.types.is_string_dtype(s.dtype) and s.dtype != object):
        s = s.astype(object).where(s.notna(), None).astype("str")
    s = s.str.strip()
    return s.mask(s == "")


def _text(s: pd.Series, col: Column, v: _Verdict) -> pd.Series:
    out = _as_text(s)
    if col.max_length is not None:
        v.flag(
            out.str.len().to_numpy(dtype=float, na_value=0) > col.max_length, TOO_LONG, col.name, s
        )
    return out


def _number(s: pd.Series, col: Column, v: _Verdict) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype):
        s = s.astype(object)
    if _is_text(s):
        text = _as_text(s)
        blank = text.isna().to_numpy()
        num = pd.to_numeric(text, errors="coerce").astype("float64")
        words = text.str.lower().isin(_NAN_INF_WORDS).to_numpy()
        values = num.to_numpy(dtype=np.float64, na_value=np.nan)
        v.flag(~blank & np.isnan(values) & ~words, NOT_NUMBER, col.name, s)
        v.flag(words | np.isinf(values), NOT_FINITE, col.name, s)
    else:
        num = pd.to_numeric(s, errors="coerce").astype("float64")
        values = num.to_numpy(dtype=np.float64, na_value=np.nan)
        v.flag(s.notna().to_numpy() & np.isnan(values), NOT_NUMBER, col.name, s)
        v.flag(np.isinf(values), NOT_FINITE, col.name, s)
    finite = np.isfinite(values)
    if col.kind == "int":
        frac = np.zeros(len(values), dtype=bool)
        np.not_equal(np.mod(values, 1.0, where=finite, out=np.zeros_like(values)), 0.0, out=frac)
        v.flag(finite & frac, NOT_INTEGER, col.name, s)
    if col.nonnegative:
        v.flag(finite & (values < 0), NEGATIVE, col.name, s)
    return pd.Series(np.where(finite, values, np.nan), index=s.index)


def _localise(ts: pd.Series, timezone: str) -> pd.Series:
    """Naive local times in ``timezone`` as UTC (an ambiguous hour counts as standard time)."""
    return ts.dt.tz_localize(
        timezone, ambiguous=np.zeros(len(ts), dtype=bool), nonexistent="shift_forward"
    ).dt.tz_convert("UTC")


def _date(s: pd.Series, col: Column, v: _Verdict, timezone: str) -> pd.Series:
    """Days as naive datetime64; text must be ISO ``YYYY-MM-DD`` (a time part may follow)."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        ts = s
        if isinstance(ts.dtype, pd.DatetimeTZDtype):
            ts = ts.dt.tz_convert(timezone).dt.tz_localize(None)
        return ts.dt.normalize().astype("datetime64[s]")
    if _is_text(s) and not (s.dtype == object and _holds_dates(s)):
        text = _as_text(s)
        head = text.str.slice(0, 10)
        tail = text.str.slice(10)
        tail_ok = (tail.isna() | (tail == "") | tail.str.match(r"^[T ]\d{2}:\d{2}")).to_numpy()
        parsed = pd.to_datetime(head, format="%Y-%m-%d", errors="coerce")
        bad = text.notna().to_numpy() & (parsed.isna().to_numpy() | ~tail_ok)
        v.flag(bad, BAD_DATE, col.name, s)
        return parsed.where(~bad).astype("datetime64[s]")
    parsed = pd.to_datetime(s, errors="coerce")
    v.flag(s.notna().to_numpy() & parsed.isna().to_numpy(), BAD_DATE, col.name, s)
    return parsed.dt.normalize().astype("datetime64[s]")


def _holds_dates(s: pd.Series) -> bool:
    first = s.dropna()
    return bool(len(first)) and isinstance(first.iloc[0], date)


def _timestamp(s: pd.Series, col: Column, v: _Verdict, timezone: str) -> pd.Series:
    """UTC instants; text is ISO 8601, and times without an offset are local to ``timezone``."""
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if isinstance(s.dtype, pd.DatetimeTZDtype):
            return s.dt.tz_convert("UTC").astype("datetime64[us, UTC]")
        return _localise(s.astype("datetime64[us]"), timezone)
    if not _is_text(s) or (s.dtype == object and _holds_dates(s)):
        s = pd.Series(
            [None if x is None or x is pd.NaT else str(x) for x in s.astype(object)],
            index=s.index,
            dtype="str",
        )
    text = _as_text(s)
    aware = text.str.contains(_AWARE, regex=True).to_numpy(dtype=bool, na_value=False)
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]")
    if aware.any():
        out[aware] = pd.to_datetime(text[aware], format="ISO8601", utc=True, errors="coerce")
    naive = ~aware & text.notna().to_numpy()
    if naive.any():
        local = pd.to_datetime(text[naive], format="ISO8601", errors="coerce")
        out[naive] = _localise(local.astype("datetime64[us]"), timezone)
    v.flag(text.notna().to_numpy() & out.isna().to_numpy(), BAD_TIMESTAMP, col.name, s)
    return out


def _bool(s: pd.Series, col: Column, v: _Verdict) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
        return s.astype(object)
    if pd.api.types.is_numeric_dtype(s.dtype):
        num = s.astype("float64")
        ok = num.isna() | num.isin([0.0, 1.0])
        v.flag(~ok.to_numpy(), BAD_BOOL, col.name, s)
        flags = np.where(num.isna().to_numpy(), None, num.to_numpy() == 1.0)
        return pd.Series(flags, index=s.index, dtype="object")
    text = _as_text(s).str.lower()
    truth = text.isin(_TRUE).to_numpy()
    false = text.isin(_FALSE).to_numpy()
    v.flag(text.notna().to_numpy() & ~truth & ~false, BAD_BOOL, col.name, s)
    out = np.full(len(s), None, dtype=object)
    out[truth] = True
    out[false] = False
    return pd.Series(out, index=s.index, dtype=object)


def _json(s: pd.Series, col: Column, v: _Verdict) -> pd.Series:
    out: list[dict[str, Any] | None] = []
    bad = np.zeros(len(s), dtype=bool)
    for i, raw in enumerate(s.astype(object).tolist()):
        if isinstance(raw, dict):
            out.append(raw)
            continue
        if raw is None or (isinstance(raw, float) and math.isnan(raw)) or str(raw).strip() == "":
            out.append(None)
            continue
        try:
            parsed = json.loads(str(raw))
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            bad[i] = True
        out.append(parsed if isinstance(parsed, dict) else None)
    v.flag(bad, BAD_JSON, col.name, s)
    return pd.Series(out, index=s.index, dtype=object)


def _parse(col: Column, s: pd.Series, v: _Verdict, ctx: Context) -> pd.Series:
    if col.kind == "str":
        return _text(s, col, v)
    if col.kind in ("int", "float"):
        return _number(s, col, v)
    if col.kind == "date":
        return _date(s, col, v, ctx.timezone)
    if col.kind == "datetime":
        return _timestamp(s, col, v, ctx.timezone)
    if col.kind == "bool":
        return _bool(s, col, v)
    return _json(s, col, v)


def _empty(col: Column, n: int, index: pd.Index) -> pd.Series:
    if col.kind in ("int", "float"):
        return pd.Series(np.full(n, np.nan), index=index)
    if col.kind == "date":
        return pd.Series(pd.NaT, index=index, dtype="datetime64[s]")
    if col.kind == "datetime":
        return pd.Series(pd.NaT, index=index, dtype="datetime64[us, UTC]")
    if col.kind == "str":
        return pd.Series(np.nan, index=index, dtype="str")
    return pd.Series([None] * n, index=index, dtype=object)


# Values the tables need when a row (or the whole source) leaves the column empty.
DEFAULTS: dict[str, dict[str, Any]] = {
    "products": {"status": "active"},
    "orders": {"status": "completed", "discount": 0.0, "quantity": 1.0},
    "sales": {"on_promotion": False},
    "promotions": {"kind": "discount", "discount_depth": 0.0, "display": False, "mailer": False},
    "events": {"region": ""},
}


def check_chunk(
    entity: Entity,
    frame: pd.DataFrame,
    rows: Rows,
    ctx: Context,
    extras: Sequence[str] = (),
) -> Checked:
    """Validate one chunk: parsed, checked and defaulted rows plus one reject per refused row."""
    frame = frame.reset_index(drop=True)
    v = _Verdict(np.asarray(rows, dtype=np.int64))
    n = len(frame)
    typed: dict[str, pd.Series] = {}
    for col in entity.columns:
        if col.name in frame.columns:
            raw = frame[col.name]
            values = _parse(col, raw, v, ctx)
            if col.required:
                v.flag(values.isna().to_numpy(), MISSING, col.name, raw)
            if col.private:
                values = _pseudonymised(values, ctx)
        else:
            values = _empty(col, n, frame.index)
        typed[col.name] = values
    out = pd.DataFrame(typed)
    for name, default in DEFAULTS.get(entity.name, {}).items():
        if isinstance(default, str | float) and not isinstance(default, bool):
            # Text and numbers keep their dtype (a round trip through object costs more).
            filled = out[name].fillna(default) if out[name].isna().any() else out[name]
            out[name] = filled.astype("str" if isinstance(default, str) else "float64")
        else:
            out[name] = out[name].astype(object).where(out[name].notna(), default)
    _RULES.get(entity.name, _no_rules)(out, frame, v, ctx, list(extras))
    if ctx.known_skus is not None and "sku" in ctx.present:
        sku = out["sku"]
        known_set = pa.array(ctx.known_skus, type=pa.string())
        if isinstance(known_set, pa.ChunkedArray):  # str columns made by concatenation
            known_set = known_set.combine_chunks()
        known = pc.is_in(
            pa.array(sku, type=pa.string(), from_pandas=True), value_set=known_set
        ).to_numpy(zero_copy_only=False)
        v.flag(sku.notna().to_numpy() & ~known, UNKNOWN_SKU, "sku", sku)
    keep = ~v.bad
    accepted = out.loc[keep].reset_index(drop=True)
    accepted.insert(0, "_row", v.rows[keep])
    return Checked(accepted, v.rejects())


def _pseudonymised(values: pd.Series, ctx: Context) -> pd.Series:
    """Personal data as keyed pseudonyms, before anything else sees the rows."""
    if ctx.pseudonyms is not None:
        return ctx.pseudonyms.series(values)
    if values.notna().any():
        raise CustomerKeyMissing()
    return values


def _no_rules(
    out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict, ctx: Context, extras: list[str]
) -> None:
    return None


def _future(day: pd.Series, ctx: Context) -> Mask:
    return (day > pd.Timestamp(ctx.today)).to_numpy(dtype=bool, na_value=False)


def _status(out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict, allowed: Sequence[str]) -> None:
    status = out["status"].str.lower()
    out["status"] = status
    source = raw["status"] if "status" in raw.columns else status
    v.flag(~status.isin(allowed).to_numpy(), BAD_STATUS, "status", source)


def _fraction(out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict, name: str) -> None:
    source = raw[name] if name in raw.columns else out[name]
    v.flag((out[name] > 1.0).to_numpy(dtype=bool, na_value=False), NOT_FRACTION, name, source)


def _products(
    out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict, ctx: Context, extras: list[str]
) -> None:
    _status(out, raw, v, PRODUCT_STATUSES)
    if not extras:
        return
    # Columns the schema does not know become attributes, so nothing a platform sends is lost.
    extra = raw[extras].astype(object)
    merged: list[dict[str, Any] | None] = []
    for base, values in zip(out["attributes"].tolist(), extra.itertuples(index=False), strict=True):
        attrs = dict(base) if isinstance(base, dict) else {}
        for key, value in zip(extras, values, strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            if isinstance(value, str):
                value = value.strip()
                if not value:
                    continue
            attrs[key] = value.item() if isinstance(value, np.generic) else value
        merged.append(attrs or None)
    out["attributes"] = pd.Series(merged, index=out.index, dtype=object)


def _orders(
    out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict, ctx: Context, extras: list[str]
) -> None:
    _status(out, raw, v, ORDER_STATUSES)
    if "line" in ctx.present:
        v.flag(out["line"].isna().to_numpy(), MISSING, "line", raw["line"])
        out["line"] = out["line"].fillna(-1).astype("int64")
    else:
        # Every row takes its place in the file, rejected or not: a reload after a fix (an
        # unknown SKU added) numbers each line as before.
        out["line"] = ctx.lines.number(out["order_id"])
    if ctx.options.discount == "amount":
        _discount_amount(out, raw, v)
    _fraction(out, raw, v, "discount")
    # A negative line that is not a return is a cancellation (an invoice cancelling an earlier
    # one): stored as cancelled, so it neither adds demand nor takes it back from the day the
    # cancelled sale was demand on.
    negative = (out["quantity"] < 0).to_numpy(dtype=bool, na_value=False)
    out.loc[negative & (out["status"] != "returned").to_numpy(), "status"] = "cancelled"
    if not ctx.options.zero_price_demand:
        # Gifts, samples and bundle parts at no price are no demand: stored as free, which the
        # daily sales leave out (featurestore.ingest.derived counts completed and returned).
        net = out["unit_price"] * (1.0 - out["discount"])
        free = (net == 0).to_numpy(dtype=bool, na_value=False)
        out.loc[free & (out["status"] != "cancelled").to_numpy(), "status"] = FREE
    local = out["ordered_at"].dt.tz_convert(ctx.timezone).dt.tz_localize(None)
    out["sale_date"] = local.dt.normalize().astype("datetime64[s]")
    v.flag(_future(out["sale_date"], ctx), FUTURE, "ordered_at", raw["ordered_at"])


def _discount_amount(out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict) -> None:
    """A discount in currency for the whole line, as the fraction of the line's value it is."""
    amount = out["discount"].to_numpy(dtype=np.float64, na_value=np.nan)
    value = (out["quantity"].abs() * out["unit_price"]).to_numpy(dtype=np.float64, na_value=np.nan)
    source = raw["discount"] if "discount" in raw.columns else out["discount"]
    given = amount > 0
    v.flag(given & ~(value > 0), DISCOUNT_WITHOUT_VALUE, "discount", source)
    # A cent of rounding in the export is no reason to refuse the line.
    v.flag(given & (amount > value * (1 + 1e-9) + 1e-6), DISCOUNT_ABOVE_VALUE, "discount", source)
    fraction = np.divide(amount, value, out=np.zeros_like(amount), where=given & (value > 0))
    out["discount"] = np.minimum(fraction, 1.0)


def _sales(
    out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict, ctx: Context, extras: list[str]
) -> None:
    v.flag(_future(out["date"], ctx), FUTURE, "date", raw["date"])


def _promotions(
    out: pd.DataFrame, raw: pd.DataFrame, v: _Verdict, ctx: Context, extras: list[str]
) -> None:
    unnamed = out["promo_id"].isna().to_numpy()
    if unnamed.any():
        out.loc[unnamed, "promo_id"] = _promo_ids(out.loc[unnamed])
    _fraction(out, raw, v, "discount_depth")
    ends_early = (out["end_date"] < out["start_date"]).to_numpy(dtype=bool, na_value=False)
    v.flag(ends_early, END_BEFORE_START, "end_date", raw["end_date"])
    untargeted = (out["sku"].isna() & out["category"].isna()).to_numpy()
    v.flag(untargeted, NO_PROMOTION_TARGET, "sku", out["sku"])


PROMO_ID_PREFIX = "auto-"


def _promo_ids(promos: pd.DataFrame) -> list[str]:
    """Stable ids of unnamed promotions from what they are: target, days and kind. Loading
    the same promotion again updates it (a new depth, say) instead of adding a second."""
    parts = [promos[c].astype(object).where(promos[c].notna(), "") for c in ("sku", "category")]
    days = [promos[c].dt.strftime("%Y-%m-%d").fillna("") for c in ("start_date", "end_date")]
    rows = zip(*parts, *days, promos["kind"].astype(object), strict=True)
    return [
        PROMO_ID_PREFIX + hashlib.sha256(json.dumps(list(r)).encode()).hexdigest()[:32]
        for r in rows
    ]


_RULES = {
    "products": _products,
    "orders": _orders,
    "sales": _sales,
    "promotions": _promotions,
}
