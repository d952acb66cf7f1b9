"""One self-contained HTML report of a model bundle: headline numbers, tables and embedded plots.

Everything comes from the bundle itself: the manifest's backtest metrics, the backtest rows of the
champion and seasonal naive, the fitted model's feature importance and the quantile calibrator. The
plots are PNGs inlined as base64 ``data:`` URIs and the CSS is inline, so the file can be mailed or
archived and opens offline.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot: pyplot keeps a global
registry of open figures and a process-wide backend, which a library called from the API's worker
or a notebook must not touch; a bare Figure renders through Agg and is freed like any object.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from training.bundle import Bundle
from training.quantiles import QuantileCalibrator

BASELINE = "seasonal_naive"
CALIBRATION_LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
BAND = (0.1, 0.9)
TOP_FEATURES = 25
MAX_SEGMENT_BARS = 20
# Caps on the rows the held-out calibration check refits on and scores: the calibrator's level map
# is an (n rows x 199) matrix, which must stay small for a 10k-SKU backtest.
MAX_CALIBRATION_FIT_ROWS = 50_000
MAX_CALIBRATION_TEST_ROWS = 200_000
DPI = 96
CHAMPION_COLOR = "#1f5fa8"
BASELINE_COLOR = "#d9822b"
ACTUAL_COLOR = "#222222"

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  margin: 0 auto; max-width: 1100px; padding: 1.5rem 2rem 3rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #1f5fa8; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { margin-bottom: 0.3rem; }
.sub { color: #666; margin-top: 0; }
nav a { margin-right: 1rem; color: #1f5fa8; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 0.9rem; min-width: 9.5rem;
  background: #fafbfc; }
.card .label { font-size: 0.8rem; color: #666; text-transform: uppercase; letter-spacing: 0.03em; }
.card .value { font-size: 1.35rem; font-weight: 600; }
.card .note { font-size: 0.8rem; color: #666; }
.good { color: #1a7f37; } .bad { color: #c62828; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.25rem 0.7rem; text-align: right; }
th { background: #f2f4f7; } td:first-child, th:first-child { text-align: left; }
tr.champion td { font-weight: 600; background: #eef4fb; }
tr.baseline td { color: #7a4a12; }
img { max-width: 100%; height: auto; display: block; margin: 0.4rem 0 0.8rem; }
.caption { color: #555; font-size: 0.9rem; }
.missing { color: #999; font-style: italic; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.15rem 1rem; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; }
footer { margin-top: 2.5rem; color: #888; font-size: 0.8rem; }
"""

SECTIONS = (
    ("summary", "Summary"),
    ("comparison", "Model comparison"),
    ("actual-vs-predicted", "Actual vs predicted"),
    ("horizon", "Error by horizon"),
    ("segments", "Error by segment"),
    ("calibration", "Quantile calibration"),
    ("features", "Feature importance"),
)


class ReportError(ValueError):
    """The bundle lacks what the report needs, or the report was asked for unknown SKUs."""


# --- small formatting pieces ------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _fmt(value: Any, kind: str = "num") -> str:
    """A metric as text: 'pct' for shares and ratios, 'num' for scores, 'int' for counts."""
    x = _num(value)
    if x is None:
        return "-"
    if kind == "pct":
        return f"{x * 100:.1f}%"
    if kind == "signed_pct":
        return f"{x * 100:+.1f}%"
    if kind == "int":
        return f"{x:,.0f}"
    if kind == "sec":
        return f"{x:,.1f} s"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:,.1f}"


def _png(fig: Figure) -> str:
    """The figure as an <img> tag with an inline base64 PNG; the figure is cleared after."""
    buf = io.BytesIO()
    # No "Software" text chunk: the PNGs carry no version string or address.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _table(
    header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) and classes[i] else ""
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _missing(text: str) -> str:
    return f'<p class="missing">{_esc(text)}</p>'


def _card(label: str, value: str, note: str = "", tone: str = "") -> str:
    cls = f"value {tone}".strip()
    extra = f'<div class="note">{_esc(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="label">{_esc(label)}</div>'
        f'<div class="{cls}">{_esc(value)}</div>{extra}</div>'
    )


# --- what the report computes from the backtest rows --------------------------------------------


def _wape(frame: pd.DataFrame) -> float:
    total = float(frame["y"].abs().sum())
    return float((frame["yhat"] - frame["y"]).abs().sum()) / total if total else math.nan


def _grouped(frame: pd.DataFrame, key: str) -> pd.DataFrame:
    """WAPE, bias and volume per value of ``key`` from backtest rows."""
    err = (frame["yhat"] - frame["y"]).abs()
    g = frame.assign(abs_err=err).groupby(key, observed=True, sort=True)
    sums = g[["y", "yhat", "abs_err"]].sum()
    y = sums["y"].where(sums["y"] != 0)
    return pd.DataFrame(
        {
            "wape": sums["abs_err"] / y,
            "bias": (sums["yhat"] - sums["y"]) / y,
            "volume": sums["y"],
        }
    )


def sku_errors(backtest: pd.DataFrame, model: str) -> pd.DataFrame:
    """Per-SKU volume, absolute error, WAPE and bias of one model over its backtest rows."""
    rows = backtest[backtest["model"] == model]
    out = _grouped(rows, "sku")
    out["abs_error"] = (
        (rows["yhat"] - rows["y"]).abs().groupby(rows["sku"], observed=True, sort=True).sum()
    )
    return out


def pick_skus(
    backtest: pd.DataFrame, model: str, *, n_top: int = 3, n_worst: int = 3
) -> tuple[list[str], list[str]]:
    """The top-volume SKUs and the worst ones by WAPE among SKUs selling at least the median."""
    per_sku = sku_errors(backtest, model)
    by_volume = per_sku.sort_values(["volume", "abs_error"], ascending=False, kind="stable")
    top = [str(s) for s in by_volume.index[:n_top]]
    sold = per_sku[per_sku["volume"] > 0]
    # Below-median sellers are left out: a SKU that sold two units has a huge WAPE and tells little.
    eligible = sold[(sold["volume"] >= sold["volume"].median()) & ~sold.index.isin(top)]
    worst = eligible.sort_values(["wape", "volume"], ascending=False, kind="stable")
    return top, [str(s) for s in worst.index[:n_worst]]


def calibration_curve(
    calibrator: QuantileCalibrator,
    rows: pd.DataFrame,
    levels: Sequence[float] = CALIBRATION_LEVELS,
) -> pd.DataFrame:
    """Observed share strictly below and at-or-below each quantile forecast, per nominal level.

    Sales are counts, so a quantile forecast is right when the nominal level lies between the two
    shares (ties with the forecast, mostly zeros, belong to both sides). Each level is asked for
    on its own, so no other level's non-crossing adjustment moves it.
    """
    y = rows["y"].to_numpy(dtype=np.float64)
    yhat = rows["yhat"].to_numpy(dtype=np.float64)
    horizon = rows["horizon"].to_numpy()
    q = np.column_stack([calibrator.predict(yhat, horizon, [level])[:, 0] for level in levels])
    return pd.DataFrame(
        {
            "level": list(levels),
            "below": (y[:, None] < q).mean(axis=0),
            "at_or_below": (y[:, None] <= q).mean(axis=0),
        }
    )


def _sample(rows: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    return rows if len(rows) <= n else rows.sample(n=n, random_state=seed)


def held_out_calibration(
    rows: pd.DataFrame, levels: Sequence[float] = CALIBRATION_LEVELS
) -> pd.DataFrame | None:
    """A calibrator refitted on all folds but the last, checked on the last (None with one fold)."""
    last = rows["fold"].max()
    fit_rows, test_rows = rows[rows["fold"] < last], rows[rows["fold"] == last]
    if fit_rows.empty or test_rows.empty:
        return None
    fit_rows = _sample(fit_rows, MAX_CALIBRATION_FIT_ROWS)
    cal = QuantileCalibrator().fit(
        fit_rows["y"].to_numpy(), fit_rows["yhat"].to_numpy(), fit_rows["horizon"].to_numpy()
    )
    return calibration_curve(cal, _sample(test_rows, MAX_CALIBRATION_TEST_ROWS), levels)


def feature_importance(model: Any) -> tuple[pd.Series, int]:
    """Importance share per feature averaged over the model's stages, and the stages counted."""
    shares: list[pd.Series] = []
    for stage in getattr(model, "stages_", None) or []:
        estimator = getattr(stage, "estimator", None)
        getter = getattr(estimator, "feature_importance", None)
        found = getter() if callable(getter) else None
        if found:
            shares.append(pd.Series(found, dtype=np.float64))
    if not shares:
        return pd.Series(dtype=np.float64), 0
    # A feature a stage lacks counts as zero there, so the mean still sums to one.
    mean = pd.concat(shares, axis=1).fillna(0.0).mean(axis=1)
    return mean.sort_values(ascending=False, kind="stable"), len(shares)


# --- plots ------------------------------------------------------------------------------------


def _date_axis(ax: Axes, first: Any, last: Any) -> None:
    ax.xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=9))
    ax.xaxis.set_major_formatter(DateFormatter("%d %b"))
    pad = pd.Timedelta(days=1)
    ax.set_xlim(
        float(date2num(pd.Timestamp(first) - pad)), float(date2num(pd.Timestamp(last) + pad))
    )


def _plot_skus(
    backtest: pd.DataFrame,
    skus: Sequence[str],
    champion: str,
    calibrator: QuantileCalibrator | None,
    per_sku: pd.DataFrame,
) -> str:
    fig = Figure(figsize=(11, 2.5 * len(skus) + 0.4), layout="constrained")
    axes = fig.subplots(len(skus), 1, squeeze=False)[:, 0]
    for ax, sku in zip(axes, skus, strict=True):
        rows = backtest[backtest["sku"] == sku].sort_values(["fold", "date"], kind="stable")
        champ = rows[rows["model"] == champion]
        base = rows[rows["model"] == BASELINE] if champion != BASELINE else rows.iloc[0:0]
        actual = rows.drop_duplicates("date").sort_values("date")
        band_label, champ_label, base_label = "P10-P90", champion, "seasonal naive"
        for _fold, part in champ.groupby("fold", sort=True):
            dates = part["date"].to_numpy()
            if calibrator is not None:
                q = calibrator.predict(
                    part["yhat"].to_numpy(dtype=np.float64), part["horizon"].to_numpy(), BAND
                )
                ax.fill_between(
                    dates,
                    q[:, 0],
                    q[:, 1],
                    color=CHAMPION_COLOR,
                    alpha=0.15,
                    lw=0,
                    label=band_label,
                )
                band_label = "_"
            ax.plot(dates, part["yhat"], color=CHAMPION_COLOR, lw=1.6, label=champ_label)
            champ_label = "_"
        for _fold, part in base.groupby("fold", sort=True):
            ax.plot(
                part["date"].to_numpy(),
                part["yhat"],
                color=BASELINE_COLOR,
                lw=1.0,
                ls="--",
                label=base_label,
            )
            base_label = "_"
        ax.plot(
            actual["date"].to_numpy(),
            actual["y"],
            color=ACTUAL_COLOR,
            lw=0.9,
            marker="o",
            ms=2.5,
            label="actual",
        )
        for cut in pd.unique(rows["cutoff"]):
            ax.axvline(cut, color="#999999", lw=0.8, ls=":")
        first = rows.iloc[0]
        where = ", ".join(
            str(first[c]) for c in ("category", "store") if c in rows and pd.notna(first[c])
        )
        stats = per_sku.loc[sku] if sku in per_sku.index else None
        score = (
            f"WAPE {_fmt(stats['wape'], 'pct')}, bias {_fmt(stats['bias'], 'signed_pct')}"
            if stats is not None
            else ""
        )
        ax.set_title(f"{sku} ({where})   {score}", loc="left", fontsize=10)
        ax.set_ylabel("units")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        _date_axis(ax, rows["cutoff"].min(), rows["date"].max())
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper left", ncols=4, fontsize=8, frameon=False)
    return _png(fig)


def _horizon_series(block: Mapping[str, Any], metric: str) -> pd.Series:
    values = {int(h): _num(m.get(metric)) for h, m in block.items() if isinstance(m, Mapping)}
    return pd.Series(values, dtype=np.float64).sort_index()


def _plot_horizon(by_horizon: Mapping[str, Any], base_rows: pd.DataFrame) -> str:
    fig = Figure(figsize=(11, 3.3), layout="constrained")
    axes = fig.subplots(1, 3)
    base = _grouped(base_rows, "horizon") if not base_rows.empty else None
    for ax, metric, title in zip(
        axes, ("rmsse", "wape", "bias"), ("RMSSE", "WAPE", "bias (+ = over-forecast)"), strict=True
    ):
        champ = _horizon_series(by_horizon, metric)
        ax.plot(
            champ.index, champ.to_numpy(), color=CHAMPION_COLOR, marker="o", ms=3, label="champion"
        )
        if base is not None and metric in base:
            ax.plot(
                base.index,
                base[metric].to_numpy(),
                color=BASELINE_COLOR,
                ls="--",
                marker="s",
                ms=3,
                label="seasonal naive",
            )
        if metric == "bias":
            ax.axhline(0, color="#888888", lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("horizon (days ahead)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, frameon=False)
    return _png(fig)


def _plot_segments(
    by_segment: Mapping[str, Any], backtest: pd.DataFrame, champion: str
) -> tuple[str, list[str]]:
    keys = [k for k in ("category", "store", "demand_class") if isinstance(by_segment.get(k), dict)]
    notes: list[str] = []
    base_rows = backtest[backtest["model"] == BASELINE] if champion != BASELINE else None
    tables = {}
    for key in keys:
        block = by_segment[key]
        table = pd.DataFrame(
            {
                "wape": {str(v): _num(m.get("wape")) for v, m in block.items()},
                "volume": {str(v): _num(m.get("sum_y")) or 0.0 for v, m in block.items()},
            },
            dtype=np.float64,
        ).sort_values("volume", ascending=False, kind="stable")
        if len(table) > MAX_SEGMENT_BARS:
            notes.append(f"{key}: the {MAX_SEGMENT_BARS} largest of {len(table)} by volume shown")
            table = table.iloc[:MAX_SEGMENT_BARS]
        if base_rows is not None and key in base_rows.columns:
            base = _grouped(base_rows.assign(**{key: base_rows[key].astype(str)}), key)
            table["baseline"] = base["wape"].reindex(table.index)
        elif base_rows is not None:
            notes.append(
                f"{key}: the bundle's backtest rows do not carry it, so seasonal naive is not shown"
            )
        tables[key] = table
    ratios = [len(t) + 1.5 for t in tables.values()]
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = fig.subplots(1, len(keys), squeeze=False, sharey=True, width_ratios=ratios)[0]
    for ax, (key, table) in zip(axes, tables.items(), strict=True):
        x = np.arange(len(table))
        ax.bar(x - 0.2, table["wape"].fillna(0.0), 0.4, color=CHAMPION_COLOR, label="champion")
        if "baseline" in table:
            ax.bar(
                x + 0.2,
                table["baseline"].fillna(0.0),
                0.4,
                color=BASELINE_COLOR,
                label="seasonal naive",
            )
        cols = ["wape", "baseline"] if "baseline" in table else ["wape"]
        for i, undefined in enumerate(table[cols].isna().any(axis=1)):
            if undefined:  # WAPE is undefined where nothing was sold: say so, not a zero bar
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=7, color="#666666")
        many = len(x) > 6
        ax.set_xticks(
            x,
            [str(v) for v in table.index],
            rotation=35 if many else 0,
            ha="right" if many else "center",
            fontsize=8,
        )
        ax.set_title(key.replace("_", " "), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("WAPE")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper left", ncols=2, fontsize=8, frameon=False)
    return _png(fig), notes


def _plot_calibration(in_sample: pd.DataFrame, held_out: pd.DataFrame | None) -> str:
    panels = [("in-sample: the bundle's calibrator on its own backtest rows", in_sample)]
    if held_out is not None:
        panels.append(("held out: refitted on earlier folds, scored on the last", held_out))
    fig = Figure(figsize=(5.2 * len(panels) + 0.4, 4.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, curve) in zip(axes, panels, strict=True):
        ax.plot([0, 1], [0, 1], color="#888888", lw=0.8, ls=":", label="ideal")
        ax.fill_between(
            curve["level"],
            curve["below"],
            curve["at_or_below"],
            color=CHAMPION_COLOR,
            alpha=0.18,
            lw=0,
            label="below .. at-or-below",
        )
        ax.plot(
            curve["level"],
            curve["at_or_below"],
            color=CHAMPION_COLOR,
            marker="o",
            ms=3,
            label="share at or below",
        )
        ax.plot(
            curve["level"],
            curve["below"],
            color=CHAMPION_COLOR,
            marker=".",
            ms=3,
            lw=0.8,
            ls="--",
            label="share strictly below",
        )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("nominal quantile level")
        ax.set_ylabel("observed share of actuals")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", frameon=False)
    return _png(fig)


def _plot_importance(importance: pd.Series, n_stages: int) -> str:
    top = importance.iloc[:TOP_FEATURES].iloc[::-1]
    fig = Figure(figsize=(9, max(0.26 * len(top) + 1.0, 2.4)), layout="constrained")
    ax = fig.subplots()
    ax.barh(np.arange(len(top)), top.to_numpy() * 100, color=CHAMPION_COLOR)
    ax.set_yticks(np.arange(len(top)), [str(n) for n in top.index], fontsize=8)
    ax.set_xlabel(f"share of total gain, %, mean over {n_stages} stage(s)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


# --- sections ---------------------------------------------------------------------------------


def _summary(bundle: Bundle) -> str:
    m = bundle.manifest
    metrics = m.metrics
    overall = metrics.get("overall") or {}
    base = metrics.get("seasonal_naive") or {}
    added = metrics.get("value_added_over_seasonal_naive") or {}
    cov = metrics.get("quantile_coverage") or {}
    cold = metrics.get("cold_start") or {}
    cards = [
        _card(
            "champion",
            str(metrics.get("champion_model", m.params.get("model", "-"))),
            f"selected by {metrics.get('selection_metric', '-')}: "
            f"{_fmt(metrics.get('selection_score'))}",
        )
    ]
    for key, label in (("rmsse", "RMSSE"), ("wape", "WAPE")):
        kind = "pct" if key == "wape" else "num"
        gain = _num(added.get(key))
        tone = "" if gain is None else ("good" if gain > 0 else "bad")
        cards.append(
            _card(
                label,
                _fmt(overall.get(key), kind),
                f"seasonal naive {_fmt(base.get(key), kind)}; "
                f"value added {_fmt(added.get(key), 'signed_pct')}",
                tone,
            )
        )
    cards.append(_card("bias", _fmt(overall.get("bias"), "signed_pct"), "+ = over-forecast"))
    lo, hi = (_num(v) or 0.0 for v in (cov.get("interval") or BAND)[:2])
    cards.append(
        _card(
            f"P{lo * 100:g}-P{hi * 100:g} coverage",
            _fmt(cov.get("interval_coverage"), "pct"),
            f"nominal {_fmt(cov.get('nominal_interval_coverage'), 'pct')}, held-out last fold",
        )
    )
    if cold.get("skus"):
        cards.append(
            _card(
                "cold start WAPE",
                _fmt(cold.get("wape"), "pct"),
                f"{_fmt(cold.get('skus'), 'int')} SKUs hidden; RMSSE {_fmt(cold.get('rmsse'))}, "
                f"bias {_fmt(cold.get('bias'), 'signed_pct')}",
            )
        )
    else:
        cards.append(_card("cold start", "-", str(cold.get("detail", "not backtested"))))
    strategy = m.strategy or {}
    meta = {
        "version": m.version,
        "created": m.created_at,
        "data window": f"{m.data_start} .. {m.data_end}",
        "cut-off": m.cutoff,
        "SKUs": _fmt(m.sku_count, "int"),
        "strategy": f"{strategy.get('name', '-')}, horizon {strategy.get('horizon', '-')} days",
        "backtest cut-offs": ", ".join(str(c) for c in metrics.get("cutoffs") or []) or "-",
        "features": str(len(m.features)),
        "training time": _fmt(metrics.get("train_seconds"), "sec"),
        "git commit": m.git_sha or "-",
    }
    dl = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in meta.items())
    return f'<div class="cards">{"".join(cards)}</div><dl class="meta">{dl}</dl>'


def _comparison(metrics: Mapping[str, Any]) -> str:
    rows = metrics.get("comparison") or []
    if not rows:
        return _missing("The bundle records no model comparison.")
    champion = metrics.get("champion_model")
    cols = (
        ("rmsse", "RMSSE", "num"),
        ("wape", "WAPE", "pct"),
        ("mase", "MASE", "num"),
        ("rmse", "RMSE", "num"),
        ("mae", "MAE", "num"),
        ("bias", "bias", "signed_pct"),
        ("fit_seconds", "fit time", "sec"),
    )
    body = [[str(r.get("model"))] + [_fmt(r.get(k), kind) for k, _, kind in cols] for r in rows]
    kinds = {champion: "champion", BASELINE: "baseline"}
    classes = [kinds.get(str(r.get("model")), "") for r in rows]
    caption = (
        f'<p class="caption">Rolling-origin backtest over {len(metrics.get("cutoffs") or [])} '
        f"fold(s), best first by {_esc(metrics.get('selection_metric', '-'))}; the champion is "
        "highlighted. Fit time sums every fold's fit and forecast.</p>"
    )
    return _table(["model", *(c[1] for c in cols)], body, classes) + caption


def _segment_tables(by_segment: Mapping[str, Any]) -> str:
    parts = []
    order = {"category": 0, "store": 1, "demand_class": 2}
    for key, block in sorted(by_segment.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])):
        if not isinstance(block, Mapping):
            continue
        ordered = sorted(block.items(), key=lambda kv: -(_num(kv[1].get("sum_y")) or 0.0))
        rows = [
            [
                str(value),
                _fmt(m.get("n_series"), "int"),
                _fmt(m.get("sum_y"), "int"),
                _fmt(m.get("rmsse")),
                _fmt(m.get("wape"), "pct"),
                _fmt(m.get("bias"), "signed_pct"),
            ]
            for value, m in ordered
        ]
        parts.append(
            f"<h3>{_esc(key.replace('_', ' '))}</h3>"
            + _table([key, "SKUs", "units", "RMSSE", "WAPE", "bias"], rows)
        )
    return "".join(parts)


def _calibration_table(
    in_sample: pd.DataFrame, held_out: pd.DataFrame | None, coverage: Mapping[str, Any]
) -> str:
    header = ["level", "in-sample below", "in-sample at or below"]
    if held_out is not None:
        header += ["held-out below", "held-out at or below"]
    rows = []
    for i, level in enumerate(in_sample["level"]):
        row = [
            f"P{level * 100:g}",
            _fmt(in_sample["below"].iloc[i], "pct"),
            _fmt(in_sample["at_or_below"].iloc[i], "pct"),
        ]
        if held_out is not None:
            row += [
                _fmt(held_out["below"].iloc[i], "pct"),
                _fmt(held_out["at_or_below"].iloc[i], "pct"),
            ]
        rows.append(row)
    text = _table(header, rows)
    if coverage:
        shares = coverage.get("share_at_or_below") or {}
        listed = ", ".join(f"P{float(k) * 100:g}: {_fmt(v, 'pct')}" for k, v in shares.items())
        text += (
            f'<p class="caption">Recorded at training (held-out last fold, '
            f"{_fmt(coverage.get('rows'), 'int')} rows): share at or below {_esc(listed)}; "
            f"interval coverage {_fmt(coverage.get('interval_coverage'), 'pct')} against "
            f"{_fmt(coverage.get('nominal_interval_coverage'), 'pct')} nominal.</p>"
        )
    return text


def _sku_block(
    backtest: pd.DataFrame,
    skus: Sequence[str],
    champion: str,
    calibrator: QuantileCalibrator | None,
    per_sku: pd.DataFrame,
    table_id: str,
) -> str:
    """A table of the SKUs' backtest numbers and the plot of their forecasts."""
    attrs = backtest.drop_duplicates("sku").set_index("sku")
    rows = []
    for sku in skus:
        stats = per_sku.loc[sku]
        rows.append(
            [
                sku,
                *(str(attrs.at[sku, c]) if c in attrs else "-" for c in ("category", "store")),
                _fmt(stats["volume"], "int"),
                _fmt(stats["wape"], "pct"),
                _fmt(stats["bias"], "signed_pct"),
            ]
        )
    table = _table(["SKU", "category", "store", "units", "WAPE", "bias"], rows)
    return table.replace("<table>", f'<table id="{table_id}">', 1) + _plot_skus(
        backtest, skus, champion, calibrator, per_sku
    )


def _backtest_rows(bundle: Bundle) -> tuple[pd.DataFrame, str]:
    backtest = bundle.artifacts.get("backtest")
    metrics = bundle.manifest.metrics
    if not isinstance(backtest, pd.DataFrame) or backtest.empty:
        raise ReportError(f"bundle {bundle.version} holds no backtest rows to report on")
    missing = {"model", "fold", "cutoff", "sku", "date", "horizon", "y", "yhat"} - set(backtest)
    if missing:
        raise ReportError(f"bundle {bundle.version}: backtest rows lack {sorted(missing)}")
    champion = str(metrics.get("champion_model") or "")
    if champion not in set(backtest["model"]):
        learned = [m for m in pd.unique(backtest["model"]) if m != BASELINE]
        champion = str(learned[0]) if learned else BASELINE
    return backtest, champion


def build_report(
    bundle: Bundle,
    *,
    skus: Sequence[str] | None = None,
    n_top: int = 3,
    n_worst: int = 3,
) -> str:
    """The bundle's report as one self-contained HTML document."""
    backtest, champion = _backtest_rows(bundle)
    metrics = bundle.manifest.metrics
    calibrator = bundle.artifacts.get("calibration")
    cal = calibrator if isinstance(calibrator, QuantileCalibrator) else None
    champ_rows = backtest[backtest["model"] == champion]
    per_sku = sku_errors(backtest, champion)
    top, worst = pick_skus(backtest, champion, n_top=n_top, n_worst=n_worst)
    if skus:
        unknown = sorted(set(skus) - set(per_sku.index))
        if unknown:
            raise ReportError(f"SKU(s) not in the bundle's backtest: {', '.join(unknown)}")
        top = list(dict.fromkeys(skus))
        worst = [s for s in worst if s not in top]

    sections: dict[str, str] = {"summary": _summary(bundle), "comparison": _comparison(metrics)}

    band = "with the calibrated P10-P90 band" if cal is not None else "(no calibrator in bundle)"
    avp = [
        f'<p class="caption">Backtest forecasts of the champion ({_esc(champion)}) {band} and of '
        "seasonal naive against the actuals; dotted lines mark the fold cut-offs.</p>",
        f"<h3>{'Chosen' if skus else 'Top-volume'} SKUs</h3>",
        _sku_block(backtest, top, champion, cal, per_sku, "top-skus")
        if top
        else _missing("No SKUs."),
        "<h3>Worst SKUs</h3>",
        '<p class="caption">Highest champion WAPE among SKUs that sold at least the median '
        "SKU's volume over the backtest.</p>",
        _sku_block(backtest, worst, champion, cal, per_sku, "worst-skus")
        if worst
        else _missing("Too few SKUs to pick worst ones beside the ones above."),
    ]
    sections["actual-vs-predicted"] = "".join(avp)

    by_horizon = metrics.get("by_horizon") or {}
    base_rows = backtest[backtest["model"] == BASELINE] if champion != BASELINE else backtest[:0]
    horizon_note = (
        '<p class="caption">Champion from the backtest metrics; seasonal naive WAPE and bias from '
        "the same backtest rows (its per-horizon RMSSE needs training history the bundle does "
        "not keep).</p>"
    )
    sections["horizon"] = (
        _plot_horizon(by_horizon, base_rows) + horizon_note
        if by_horizon
        else _missing("The bundle records no per-horizon metrics.")
    )

    by_segment = metrics.get("by_segment") or {}
    if by_segment:
        img, notes = _plot_segments(by_segment, backtest, champion)
        note = "".join(f'<p class="caption">{_esc(n)}.</p>' for n in notes)
        sections["segments"] = img + note + _segment_tables(by_segment)
    else:
        sections["segments"] = _missing("The bundle records no per-segment metrics.")

    if cal is not None and not champ_rows.empty:
        in_sample = calibration_curve(cal, _sample(champ_rows, MAX_CALIBRATION_TEST_ROWS))
        held_out = held_out_calibration(champ_rows)
        sections["calibration"] = (
            '<p class="caption">For count data a quantile forecast is right when its nominal level '
            "lies between the share of actuals strictly below it and the share at or below it "
            "(the shaded band should straddle the diagonal). Each level is forecast on its own; a "
            "dip means a level's forecast falls below a lower level's.</p>"
            + _plot_calibration(in_sample, held_out)
            + _calibration_table(in_sample, held_out, metrics.get("quantile_coverage") or {})
        )
    else:
        sections["calibration"] = _missing("The bundle holds no quantile calibrator.")

    importance, n_stages = feature_importance(bundle.artifacts.get("model"))
    if n_stages:
        sections["features"] = (
            f'<p class="caption">Top {min(TOP_FEATURES, len(importance))} of {len(importance)} '
            "features by gain (tree models) or impurity share.</p>"
            + _plot_importance(importance, n_stages)
        )
    else:
        sections["features"] = _missing("The champion model reports no feature importance.")

    return _document(bundle, sections)


def _document(bundle: Bundle, sections: Mapping[str, str]) -> str:
    m = bundle.manifest
    nav = "".join(f'<a href="#{sid}">{_esc(title)}</a>' for sid, title in SECTIONS)
    body = "".join(
        f'<section id="{sid}"><h2>{_esc(title)}</h2>{sections[sid]}</section>'
        for sid, title in SECTIONS
    )
    libs = ", ".join(f"{k} {v}" for k, v in sorted(m.libraries.items()))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>salesfc model {_esc(m.version)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Forecast model report</h1>"
        f'<p class="sub">bundle {_esc(m.version)}, trained on data {_esc(m.data_start)} .. '
        f"{_esc(m.data_end)} ({_fmt(m.sku_count, 'int')} SKUs)</p><nav>{nav}</nav></header>"
        f"{body}<footer>Written by salesfc from bundle {_esc(m.version)}; {_esc(libs)}.</footer>"
        "</body></html>\n"
    )


def write_report(bundle: Bundle, out: Path, *, skus: Sequence[str] | None = None) -> Path:
    """Write the bundle's HTML report to ``out`` (atomically) and return the path."""
    out = Path(out)
    text = build_report(bundle, skus=skus)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
