"""The report's figures as inline PNG ``<img>`` tags.

Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, whose global registry of
open figures and process-wide backend a library called from the API or a notebook must not touch.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.dates import AutoDateLocator, DateFormatter, date2num
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from training.quantiles import QuantileCalibrator
from training.report.markup import fmt, num
from training.report.scores import BAND, BASELINE, grouped_errors

TOP_FEATURES = 25
MAX_SEGMENT_BARS = 20
DPI = 96
CHAMPION_COLOR = "#1f5fa8"
BASELINE_COLOR = "#d9822b"
ACTUAL_COLOR = "#222222"


def png_img(fig: Figure) -> str:
    """The figure as an <img> tag with an inline base64 PNG; the figure is cleared after."""
    buf = io.BytesIO()
    # No "Software" text chunk: the PNGs carry no version string or address.
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    fig.clear()
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def _date_axis(ax: Axes, first: Any, last: Any) -> None:
    ax.xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=9))
    ax.xaxis.set_major_formatter(DateFormatter("%d %b"))
    pad = pd.Timedelta(days=1)
    ax.set_xlim(
        float(date2num(pd.Timestamp(first) - pad)), float(date2num(pd.Timestamp(last) + pad))
    )


def plot_skus(
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
            f"WAPE {fmt(stats['wape'], 'pct')}, bias {fmt(stats['bias'], 'signed_pct')}"
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
    return png_img(fig)


def _horizon_series(block: Mapping[str, Any], metric: str) -> pd.Series:
    values = {int(h): num(m.get(metric)) for h, m in block.items() if isinstance(m, Mapping)}
    return pd.Series(values, dtype=np.float64).sort_index()


def plot_horizon(by_horizon: Mapping[str, Any], base_rows: pd.DataFrame) -> str:
    fig = Figure(figsize=(11, 3.3), layout="constrained")
    axes = fig.subplots(1, 3)
    base = grouped_errors(base_rows, "horizon") if not base_rows.empty else None
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
    return png_img(fig)


def plot_segments(
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
                "wape": {str(v): num(m.get("wape")) for v, m in block.items()},
                "volume": {str(v): num(m.get("sum_y")) or 0.0 for v, m in block.items()},
            },
            dtype=np.float64,
        ).sort_values("volume", ascending=False, kind="stable")
        if len(table) > MAX_SEGMENT_BARS:
            notes.append(f"{key}: the {MAX_SEGMENT_BARS} largest of {len(table)} by volume shown")
            table = table.iloc[:MAX_SEGMENT_BARS]
        if base_rows is not None and key in base_rows.columns:
            base = grouped_errors(base_rows.assign(**{key: base_rows[key].astype(str)}), key)
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
    return png_img(fig), notes


def plot_calibration(in_sample: pd.DataFrame, held_out: pd.DataFrame | None) -> str:
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
    return png_img(fig)


def plot_importance(importance: pd.Series, n_stages: int) -> str:
    top = importance.iloc[:TOP_FEATURES].iloc[::-1]
    fig = Figure(figsize=(9, max(0.26 * len(top) + 1.0, 2.4)), layout="constrained")
    ax = fig.subplots()
    ax.barh(np.arange(len(top)), top.to_numpy() * 100, color=CHAMPION_COLOR)
    ax.set_yticks(np.arange(len(top)), [str(n) for n in top.index], fontsize=8)
    ax.set_xlabel(f"share of total gain, %, mean over {n_stages} stage(s)")
    ax.grid(axis="x", alpha=0.3)
    return png_img(fig)


def plot_inventory(settings: Sequence[Mapping[str, Any]]) -> str:
    """Target vs achieved cycle service level per lead time: the policy and the shortcut."""
    leads = sorted({int(s["lead_time_days"]) for s in settings})
    fig = Figure(figsize=(5.6, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0.5, 1], [0.5, 1], color="#888888", lw=0.8, ls=":", label="target")
    colors = ("#1f5fa8", "#2e8b57", "#8b3a8b", "#b8860b")
    for i, lead in enumerate(leads):
        rows = sorted(
            (s for s in settings if int(s["lead_time_days"]) == lead),
            key=lambda s: float(s["service_level"]),
        )
        x = [float(s["service_level"]) for s in rows]
        color = colors[i % len(colors)]
        ax.plot(
            x,
            [s["achieved"]["cycle_service_level"] for s in rows],
            color=color,
            marker="o",
            ms=4,
            label=f"{lead} days: lead-time distribution",
        )
        ax.plot(
            x,
            [s["summed_daily_quantiles"]["cycle_service_level"] for s in rows],
            color=color,
            marker="x",
            ms=4,
            lw=0.8,
            ls="--",
            label=f"{lead} days: summed daily quantiles",
        )
    ax.set_xlim(0.5, 1)
    ax.set_ylim(0.4, 1.01)
    ax.set_xlabel("target cycle service level")
    ax.set_ylabel("achieved: share of cycles with demand <= order-up-to")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    return png_img(fig)
