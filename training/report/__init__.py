"""One self-contained HTML report of a model bundle: headline numbers, tables and embedded plots.

Everything comes from the bundle (manifest metrics, backtest rows, the model's feature importance
and the quantile calibrator); plots are inline PNGs and the CSS is inline, so the file opens
offline. Numbers in ``training.report.scores``, figures in ``training.report.figures``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from training.bundle import Bundle
from training.inventory import NoResidualBlocks, replay
from training.quantiles import QuantileCalibrator
from training.report.figures import (
    ACTUAL_COLOR,
    BASELINE_COLOR,
    CHAMPION_COLOR,
    DPI,
    MAX_SEGMENT_BARS,
    TOP_FEATURES,
    plot_calibration,
    plot_horizon,
    plot_importance,
    plot_inventory,
    plot_segments,
    plot_skus,
)
from training.report.markup import CSS, card, esc, fmt, html_table, missing, num
from training.report.scores import (
    BAND,
    BASELINE,
    CALIBRATION_LEVELS,
    MAX_CALIBRATION_FIT_ROWS,
    MAX_CALIBRATION_TEST_ROWS,
    calibration_curve,
    feature_importance,
    held_out_calibration,
    pick_skus,
    sample_rows,
    sku_errors,
)

__all__ = [
    "ACTUAL_COLOR",
    "BAND",
    "BASELINE",
    "BASELINE_COLOR",
    "CALIBRATION_LEVELS",
    "CHAMPION_COLOR",
    "CSS",
    "DPI",
    "MAX_CALIBRATION_FIT_ROWS",
    "MAX_CALIBRATION_TEST_ROWS",
    "MAX_SEGMENT_BARS",
    "SECTIONS",
    "TOP_FEATURES",
    "ReportError",
    "build_report",
    "calibration_curve",
    "feature_importance",
    "held_out_calibration",
    "pick_skus",
    "sku_errors",
    "write_report",
]

SECTIONS = (
    ("summary", "Summary"),
    ("comparison", "Model comparison"),
    ("actual-vs-predicted", "Actual vs predicted"),
    ("horizon", "Error by horizon"),
    ("segments", "Error by segment"),
    ("calibration", "Quantile calibration"),
    ("inventory", "Inventory policy on history"),
    ("features", "Feature importance"),
)


INVENTORY_LEVELS = (0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


class ReportError(ValueError):
    """The bundle lacks what the report needs, or the report was asked for unknown SKUs."""


def _summary(bundle: Bundle) -> str:
    m = bundle.manifest
    metrics = m.metrics
    overall = metrics.get("overall") or {}
    base = metrics.get("seasonal_naive") or {}
    added = metrics.get("value_added_over_seasonal_naive") or {}
    cov = metrics.get("quantile_coverage") or {}
    cold = metrics.get("cold_start") or {}
    cards = [
        card(
            "champion",
            str(metrics.get("champion_model", m.params.get("model", "-"))),
            f"selected by {metrics.get('selection_metric', '-')}: "
            f"{fmt(metrics.get('selection_score'))}",
        )
    ]
    for key, label in (("rmsse", "RMSSE"), ("wape", "WAPE")):
        kind = "pct" if key == "wape" else "num"
        gain = num(added.get(key))
        tone = "" if gain is None else ("good" if gain > 0 else "bad")
        cards.append(
            card(
                label,
                fmt(overall.get(key), kind),
                f"seasonal naive {fmt(base.get(key), kind)}; "
                f"value added {fmt(added.get(key), 'signed_pct')}",
                tone,
            )
        )
    cards.append(card("bias", fmt(overall.get("bias"), "signed_pct"), "+ = over-forecast"))
    lo, hi = (num(v) or 0.0 for v in (cov.get("interval") or BAND)[:2])
    cards.append(
        card(
            f"P{lo * 100:g}-P{hi * 100:g} coverage",
            fmt(cov.get("interval_coverage"), "pct"),
            f"nominal {fmt(cov.get('nominal_interval_coverage'), 'pct')}, held-out last fold",
        )
    )
    if cold.get("skus"):
        cards.append(
            card(
                "cold start WAPE",
                fmt(cold.get("wape"), "pct"),
                f"{fmt(cold.get('skus'), 'int')} SKUs hidden; RMSSE {fmt(cold.get('rmsse'))}, "
                f"bias {fmt(cold.get('bias'), 'signed_pct')}",
            )
        )
    else:
        cards.append(card("cold start", "-", str(cold.get("detail", "not backtested"))))
    strategy = m.strategy or {}
    meta = {
        "version": m.version,
        "created": m.created_at,
        "data window": f"{m.data_start} .. {m.data_end}",
        "cut-off": m.cutoff,
        "SKUs": fmt(m.sku_count, "int"),
        "strategy": f"{strategy.get('name', '-')}, horizon {strategy.get('horizon', '-')} days",
        "backtest cut-offs": ", ".join(str(c) for c in metrics.get("cutoffs") or []) or "-",
        "features": str(len(m.features)),
        "training time": fmt(metrics.get("train_seconds"), "sec"),
        "training targets": _training_data(metrics.get("training_data") or {}),
        "git commit": m.git_sha or "-",
    }
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in meta.items())
    return f'<div class="cards">{"".join(cards)}</div><dl class="meta">{dl}</dl>'


def _training_data(data: Mapping[str, Any]) -> str:
    """Censored and capped training days (training.cleaning), as the train command prints."""
    if not data.get("rows"):
        return "-"
    return (
        f"{fmt(data.get('censored_days'), 'int')} days censored (stock-out flag "
        f"{fmt(data.get('stock_out_days'), 'int')}, "
        f"zero runs {fmt(data.get('zero_run_days'), 'int')}, "
        f"closed {fmt(data.get('closed_days'), 'int')}); "
        f"{fmt(data.get('capped_days'), 'int')} bulk-order days capped; yearly features "
        + ("kept" if data.get("yearly_features") else "dropped")
    )


def _comparison(metrics: Mapping[str, Any]) -> str:
    rows = metrics.get("comparison") or []
    if not rows:
        return missing("The bundle records no model comparison.")
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
    body = [[str(r.get("model"))] + [fmt(r.get(k), kind) for k, _, kind in cols] for r in rows]
    kinds = {champion: "champion", BASELINE: "baseline"}
    classes = [kinds.get(str(r.get("model")), "") for r in rows]
    caption = (
        f'<p class="caption">Rolling-origin backtest over {len(metrics.get("cutoffs") or [])} '
        f"fold(s), best first by {esc(metrics.get('selection_metric', '-'))}; the champion is "
        "highlighted. Fit time sums every fold's fit and forecast.</p>"
    )
    return html_table(["model", *(c[1] for c in cols)], body, classes) + caption


def _segment_tables(by_segment: Mapping[str, Any]) -> str:
    parts = []
    order = {"category": 0, "store": 1, "demand_class": 2}
    for key, block in sorted(by_segment.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])):
        if not isinstance(block, Mapping):
            continue
        ordered = sorted(block.items(), key=lambda kv: -(num(kv[1].get("sum_y")) or 0.0))
        rows = [
            [
                str(value),
                fmt(m.get("n_series"), "int"),
                fmt(m.get("sum_y"), "int"),
                fmt(m.get("rmsse")),
                fmt(m.get("wape"), "pct"),
                fmt(m.get("bias"), "signed_pct"),
            ]
            for value, m in ordered
        ]
        parts.append(
            f"<h3>{esc(key.replace('_', ' '))}</h3>"
            + html_table([key, "SKUs", "units", "RMSSE", "WAPE", "bias"], rows)
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
            fmt(in_sample["below"].iloc[i], "pct"),
            fmt(in_sample["at_or_below"].iloc[i], "pct"),
        ]
        if held_out is not None:
            row += [
                fmt(held_out["below"].iloc[i], "pct"),
                fmt(held_out["at_or_below"].iloc[i], "pct"),
            ]
        rows.append(row)
    text = html_table(header, rows)
    if coverage:
        shares = coverage.get("share_at_or_below") or {}
        listed = ", ".join(f"P{float(k) * 100:g}: {fmt(v, 'pct')}" for k, v in shares.items())
        text += (
            f'<p class="caption">Recorded at training (held-out last fold, '
            f"{fmt(coverage.get('rows'), 'int')} rows): share at or below {esc(listed)}; "
            f"interval coverage {fmt(coverage.get('interval_coverage'), 'pct')} against "
            f"{fmt(coverage.get('nominal_interval_coverage'), 'pct')} nominal.</p>"
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
                fmt(stats["volume"], "int"),
                fmt(stats["wape"], "pct"),
                fmt(stats["bias"], "signed_pct"),
            ]
        )
    table = html_table(["SKU", "category", "store", "units", "WAPE", "bias"], rows)
    return table.replace("<table>", f'<table id="{table_id}">', 1) + plot_skus(
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
        f'<p class="caption">Backtest forecasts of the champion ({esc(champion)}) {band} and of '
        "seasonal naive against the actuals; dotted lines mark the fold cut-offs.</p>",
        f"<h3>{'Chosen' if skus else 'Top-volume'} SKUs</h3>",
        _sku_block(backtest, top, champion, cal, per_sku, "top-skus")
        if top
        else missing("No SKUs."),
        "<h3>Worst SKUs</h3>",
        '<p class="caption">Highest champion WAPE among SKUs that sold at least the median '
        "SKU's volume over the backtest.</p>",
        _sku_block(backtest, worst, champion, cal, per_sku, "worst-skus")
        if worst
        else missing("Too few SKUs to pick worst ones beside the ones above."),
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
        plot_horizon(by_horizon, base_rows) + horizon_note
        if by_horizon
        else missing("The bundle records no per-horizon metrics.")
    )

    by_segment = metrics.get("by_segment") or {}
    if by_segment:
        img, notes = plot_segments(by_segment, backtest, champion)
        note = "".join(f'<p class="caption">{esc(n)}.</p>' for n in notes)
        sections["segments"] = img + note + _segment_tables(by_segment)
    else:
        sections["segments"] = missing("The bundle records no per-segment metrics.")

    if cal is not None and not champ_rows.empty:
        in_sample = calibration_curve(cal, sample_rows(champ_rows, MAX_CALIBRATION_TEST_ROWS))
        held_out = held_out_calibration(champ_rows)
        sections["calibration"] = (
            '<p class="caption">For count data a quantile forecast is right when its nominal level '
            "lies between the share of actuals strictly below it and the share at or below it "
            "(the shaded band should straddle the diagonal). Each level is forecast on its own; a "
            "dip means a level's forecast falls below a lower level's.</p>"
            + plot_calibration(in_sample, held_out)
            + _calibration_table(in_sample, held_out, metrics.get("quantile_coverage") or {})
        )
    else:
        sections["calibration"] = missing("The bundle holds no quantile calibrator.")

    sections["inventory"] = _inventory_section(champ_rows)

    importance, n_stages = feature_importance(bundle.artifacts.get("model"))
    if n_stages:
        sections["features"] = (
            f'<p class="caption">Top {min(TOP_FEATURES, len(importance))} of {len(importance)} '
            "features by gain (tree models) or impurity share.</p>"
            + plot_importance(importance, n_stages)
        )
    else:
        sections["features"] = missing("The champion model reports no feature importance.")

    return _document(bundle, sections)


def _inventory_section(champ_rows: pd.DataFrame) -> str:
    """The (R, S) policy replayed on the champion's folds: target vs achieved service level."""
    try:
        report = replay(champ_rows, service_levels=INVENTORY_LEVELS)
    except NoResidualBlocks as exc:
        return missing(f"No inventory replay: {exc}.")
    if not report["settings"]:
        return missing("The backtest horizon is shorter than every replayed lead time.")
    rows = [
        [
            str(s["lead_time_days"]),
            fmt(s["service_level"], "pct"),
            fmt(s["achieved"]["cycle_service_level"], "pct"),
            fmt(s["achieved"]["share_below"], "pct"),
            fmt(s["achieved"]["fill_rate"], "pct"),
            fmt(s["summed_daily_quantiles"]["cycle_service_level"], "pct"),
        ]
        for s in report["settings"]
    ]
    head = [
        "lead time (days)",
        "target",
        "achieved (demand <= S)",
        "demand < S",
        "fill rate",
        "summed daily quantiles",
    ]
    return (
        f'<p class="caption">At each of the {report["folds"]} cut-offs the order-up-to level S '
        "is the target quantile of demand over the lead time, from the champion's forecast and "
        "residual blocks of the other folds; achieved is the share of SKU-cycles whose demand "
        "stayed at or below S. Dashed: S as the sum of calibrated daily quantiles.</p>"
        + plot_inventory(report["settings"])
        + html_table(head, rows)
    )


def _document(bundle: Bundle, sections: Mapping[str, str]) -> str:
    m = bundle.manifest
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title in SECTIONS)
    body = "".join(
        f'<section id="{sid}"><h2>{esc(title)}</h2>{sections[sid]}</section>'
        for sid, title in SECTIONS
    )
    libs = ", ".join(f"{k} {v}" for k, v in sorted(m.libraries.items()))
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>salesfc model {esc(m.version)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>Forecast model report</h1>"
        f'<p class="sub">bundle {esc(m.version)}, trained on data {esc(m.data_start)} .. '
        f"{esc(m.data_end)} ({fmt(m.sku_count, 'int')} SKUs)</p><nav>{nav}</nav></header>"
        f"{body}<footer>Written by salesfc from bundle {esc(m.version)}; {esc(libs)}.</footer>"
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
