"""Totals benchmark: coverage of the totals' P10-P90 on m5_tiny's held-out 28 days, by level.

A bundle is trained on m5_tiny up to 28 days before its last day (lgbm_tweedie against seasonal
naive, --folds backtest cut-offs); the catalogue is forecast from that cut-off, and at the
category, store, category x store and total levels the held-out daily totals are checked against

- ``joint``: the P10-P90 from joint sample paths (``training.aggregate``, what the API answers);
- ``summed``: the sum of the SKUs' calibrated P10 and P90 (what a user would build by hand).

Also per level: the means' coherence (largest |total - sum of SKU means|), WAPE and bias of the
bottom-up mean, and the same for MinT (shrinkage) reconciliation of bottom-up SKU forecasts with
seasonal-naive totals, its covariance from the backtest residuals: what decides whether the API
reconciles beyond bottom-up. Then the latency of one aggregate request for a category, computed
(no cache) and with the SKU forecasts stored by forecast-all, through the service's code path.

Results go to docs/benchmarks.md, ``## Totals`` (--no-write prints them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from app.services.aggregate import AggregateService  # noqa: E402
from app.services.champion import ChampionHolder  # noqa: E402
from app.services.forecasting import ForecastService  # noqa: E402
from app.services.inventory import calibration  # noqa: E402
from featurestore import migrations  # noqa: E402
from featurestore.db import make_engine  # noqa: E402
from featurestore.ingest import import_m5  # noqa: E402
from featurestore.readers import last_sales_date, read_frame, read_products  # noqa: E402
from training.aggregate import group_keys, replay, totals_frame  # noqa: E402
from training.options import TrainOptions  # noqa: E402
from training.pipeline import train  # noqa: E402
from training.predict import forecast_all  # noqa: E402
from training.registry import Registry  # noqa: E402

DOC = ROOT / "docs" / "benchmarks.md"
M5_TINY = ROOT.parent / "shared" / "data" / "m5_tiny" / "tiny_m5.parquet"
HELD_OUT = 28
LEVELS = ("category", "store", "category_store", "total")
QUANTILES = (0.1, 0.5, 0.9)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_avg() -> float:
    return os.getloadavg()[0]


def mint_shrink(residuals: np.ndarray) -> np.ndarray:
    """The MinT-shrink covariance (Schaefer-Strimmer shrinkage of the correlations to 0)."""
    n = residuals.shape[0]
    x = residuals - residuals.mean(axis=0)
    cov = x.T @ x / n
    sd = np.sqrt(np.clip(np.diag(cov), 1e-12, None))
    z = x / sd
    corr = z.T @ z / n
    w = np.einsum("ti,tj->tij", z, z)
    var_corr = n / (n - 1) ** 3 * ((w - corr) ** 2).sum(axis=0)
    off = ~np.eye(len(sd), dtype=bool)
    lam = float(np.clip(var_corr[off].sum() / max((corr[off] ** 2).sum(), 1e-12), 0.0, 1.0))
    shrunk = corr * (1.0 - lam)
    np.fill_diagonal(shrunk, 1.0)
    return np.asarray(shrunk * np.outer(sd, sd))


def summing(products: pd.DataFrame, skus: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The summing matrix S (aggregates on top, then the SKUs) over the levels measured."""
    attrs = products.set_index("sku").reindex(skus).reset_index()
    rows: list[np.ndarray] = []
    names: list[str] = []
    for level in LEVELS:
        keys = group_keys(attrs, level)
        for key in sorted(set(keys)):
            rows.append((keys == key).astype(np.float64))
            names.append(f"{level}:{key}")
    return np.vstack([*rows, np.eye(len(skus))]), names


def mint(
    bundle: Any, products: pd.DataFrame, skus: np.ndarray, fc: np.ndarray, naive: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """MinT-shrink reconciled SKU means from the champion's SKUs and seasonal-naive totals.

    ``fc`` (skus, days) the champion's SKU means; ``naive`` (skus, days) seasonal naive's, whose
    sums are the aggregate levels' base forecasts. W comes from the backtest's residuals of the
    same pair (aggregates: seasonal naive's totals, SKUs: the champion's).
    """
    S, _names = summing(products, skus)
    m = S.shape[0] - len(skus)
    rows = bundle.artifacts["backtest"]
    champion = bundle.manifest.metrics.get("champion_model")
    err = {}
    for model in (champion, "seasonal_naive"):
        part = rows[rows["model"] == model]
        wide_y = part.pivot_table(index=["fold", "horizon"], columns="sku", values="y")
        wide_f = part.pivot_table(index=["fold", "horizon"], columns="sku", values="yhat")
        err[model] = (wide_y - wide_f).reindex(columns=skus).fillna(0.0).to_numpy()
    res = np.hstack([err["seasonal_naive"] @ S[:m].T, err[champion]])  # (t, m + n)
    W = mint_shrink(res)
    Winv = np.linalg.pinv(W)
    G = np.linalg.solve(S.T @ Winv @ S, S.T @ Winv)  # (n, m + n)
    base = np.vstack([S[:m] @ naive, fc])  # (m + n, days)
    return G @ base, S


def coverage_case(work: Path, folds: int, trees: int | None) -> dict[str, Any]:
    url = f"sqlite:///{work / 'm5.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    t0 = time.perf_counter()
    import_m5(engine, M5_TINY)
    last = last_sales_date(engine)
    assert last is not None
    cutoff = last - dt.timedelta(days=HELD_OUT)
    log(f"m5_tiny imported in {time.perf_counter() - t0:.1f} s; cut-off {cutoff}")
    models = work / "models"
    t0 = time.perf_counter()
    options = TrainOptions(models=["seasonal_naive", "lgbm_tweedie"], folds=folds, cutoff=cutoff)
    if trees:
        options.n_estimators = trees
    outcome = train(engine, models, options, lambda m: log(f"train: {m}"))
    registry = Registry(models)
    registry.promote(outcome.version, reason="bench/aggregate.py")
    train_s = time.perf_counter() - t0
    log(f"trained {outcome.version} in {train_s:.1f} s")
    out = evaluate(engine, registry.load_champion(), cutoff, last)
    out.update(
        folds=folds,
        version=outcome.version,
        train_seconds=round(train_s, 1),
        engine_url=url,
        models=str(models),
    )
    return out


def evaluate(engine: Any, bundle: Any, cutoff: dt.date, last: dt.date) -> dict[str, Any]:
    """Coverage, coherence and accuracy of the totals over the days after ``cutoff``."""
    cal = calibration(bundle)
    fc = forecast_all(engine, bundle, as_of=cutoff, horizon=HELD_OUT, quantiles=QUANTILES)
    products = read_products(engine)
    actual = read_frame(
        engine, start=cutoff + dt.timedelta(days=1), end=last, skus=list(fc["sku"].unique())
    )[["sku", "date", "units"]]
    actual["date"] = pd.to_datetime(actual["date"]).dt.date
    t0 = time.perf_counter()
    totals = totals_frame(
        fc, products, cal.blocks, levels=LEVELS, quantiles=QUANTILES, cold_widen=cal.cold_widen
    )
    totals_s = time.perf_counter() - t0
    rows = fc.merge(actual, on=["sku", "date"], how="left").merge(
        products[["sku", "category", "store"]], on="sku"
    )
    skus = np.asarray(sorted(fc["sku"].unique()), dtype=object)
    wide_mean = fc.pivot(index="sku", columns="date", values="mean").reindex(skus)
    # Seasonal naive per SKU from the last 7 days before the cut-off (the aggregates' base).
    past = read_frame(engine, start=cutoff - dt.timedelta(days=6), end=cutoff, skus=list(skus))
    last_week = past.pivot(index="sku", columns="date", values="units").reindex(skus).to_numpy()
    naive = np.nan_to_num(np.tile(last_week, (1, HELD_OUT // 7 + 1))[:, :HELD_OUT])
    recon, _S = mint(bundle, products, skus, wide_mean.to_numpy(), naive)
    wide_actual = rows.pivot(index="sku", columns="date", values="units").reindex(skus).to_numpy()

    levels: dict[str, Any] = {}
    attrs = products.set_index("sku").reindex(skus).reset_index()
    for level in [*LEVELS, "sku"]:
        keys = skus if level == "sku" else group_keys(attrs, level)
        uniq = sorted(set(keys))
        onehot = np.vstack([(keys == k).astype(np.float64) for k in uniq])
        y = onehot @ np.nan_to_num(wide_actual)
        bu = onehot @ wide_mean.to_numpy()
        mt = onehot @ recon
        entry: dict[str, Any] = {
            "groups": len(uniq),
            "points": int(y.size),
            "wape_bottom_up": float(np.abs(y - bu).sum() / y.sum()),
            "wape_mint": float(np.abs(y - mt).sum() / y.sum()),
            "bias_bottom_up": float((bu - y).sum() / y.sum()),
            "bias_mint": float((mt - y).sum() / y.sum()),
        }
        if level == "sku":
            entry["coverage_sku"] = float(
                ((rows["units"] >= rows["p10"]) & (rows["units"] <= rows["p90"])).mean()
            )
            levels[level] = entry
            continue
        mine = totals[totals["level"] == level]
        summed = (
            rows.assign(key=group_keys(rows, level))
            .groupby(["key", "date"])[["mean", "p10", "p90", "units"]]
            .sum()
            .reset_index()
        )
        both = mine.merge(summed, on=["key", "date"], suffixes=("", "_sum"))
        ins_joint = (both["units"] >= both["p10"]) & (both["units"] <= both["p90"])
        ins_sum = (both["units"] >= both["p10_sum"]) & (both["units"] <= both["p90_sum"])
        entry.update(
            coverage_joint=float(ins_joint.mean()),
            coverage_summed=float(ins_sum.mean()),
            below_joint=float((both["units"] < both["p10"]).mean()),
            above_joint=float((both["units"] > both["p90"]).mean()),
            width_joint=float((both["p90"] - both["p10"]).mean()),
            width_summed=float((both["p90_sum"] - both["p10_sum"]).mean()),
            coherence=float((both["mean"] - both["mean_sum"]).abs().max()),
        )
        levels[level] = entry
        log(f"{level}: {entry}")
    rows_bt = bundle.artifacts["backtest"]
    champion = bundle.manifest.metrics.get("champion_model")
    try:
        replayed: dict[str, Any] | None = replay(
            rows_bt[rows_bt["model"] == champion], products, levels=LEVELS
        )
    except ValueError:
        replayed = None  # one fold: nothing calibrates it
    return {
        "replay": replayed,
        "cutoff": cutoff.isoformat(),
        "model": bundle.manifest.metrics.get("champion_model"),
        "blocks": len(cal.blocks),
        "paths": int(len(np.unique(cal.blocks.fold)) * cal.blocks.horizon),
        "skus": len(skus),
        "totals_seconds": round(totals_s, 3),
        "levels": levels,
    }


def latency_case(url: str, models: Path, repeats: int) -> dict[str, Any]:
    """One aggregate request for each m5_tiny category through the service: computed and stored."""
    engine = make_engine(url)
    registry = Registry(models)
    out: dict[str, Any] = {}
    for name, use_cache in (("computed", False), ("cached", True)):
        holder = ChampionHolder(registry)
        forecasts = ForecastService(engine, holder, list(QUANTILES), use_cache=use_cache)
        service = AggregateService(forecasts)
        keys = service.keys("category")
        service.total("category", keys[0], None, None)  # warm: champion, window, blocks
        times = []
        loads = []
        for i in range(repeats):
            key = keys[i % len(keys)]
            service.forget()  # the totals are computed each time (SKU forecasts may be cached)
            t0 = time.perf_counter()
            service.total("category", key, None, None)
            times.append((time.perf_counter() - t0) * 1000)
            loads.append(load_avg())
        out[name] = {
            "median_ms": round(statistics.median(times), 1),
            "p90_ms": round(float(np.percentile(times, 90)), 1),
            "max_ms": round(max(times), 1),
            "repeats": repeats,
            "load_1m": round(statistics.mean(loads), 2),
            "skus": {k: len(service.members("category", k)) for k in keys},
        }
        log(f"latency {name}: {out[name]}")
    return out


PAGES = (
    "/dashboard",
    "/dashboard/accuracy",
    "/dashboard/sku?q=FOODS_3",
    "/dashboard/sku?sku={sku}",
    "/dashboard/totals?level=category",
    "/dashboard/totals?level=store",
)


def pages_case(url: str, models: Path, repeats: int) -> dict[str, Any]:
    """Each dashboard page's HTML through the whole app (in-process ASGI), warm."""
    from fastapi.testclient import TestClient

    from app.main import create_app
    from featurestore.config import Settings

    key = "bench-read-key"
    settings = Settings(database_url=url, models_dir=models, read_api_keys=[key])  # type: ignore[list-item]
    out: dict[str, Any] = {}
    sku = str(read_products(make_engine(url))["sku"].iloc[0])
    with TestClient(create_app(settings)) as client:
        client.headers["X-API-Key"] = key
        for path in (p.format(sku=sku) for p in PAGES):
            assert client.get(path).status_code == 200, path
            times, loads = [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = client.get(path)
                times.append((time.perf_counter() - t0) * 1000)
                loads.append(load_avg())
                assert res.status_code == 200
            out[path] = {
                "median_ms": round(statistics.median(times), 1),
                "p90_ms": round(float(np.percentile(times, 90)), 1),
                "load_1m": round(statistics.mean(loads), 2),
            }
            log(f"page {path}: {out[path]}")
    return out


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def render(res: dict[str, Any]) -> str:
    cov = res["coverage"]
    lat = res["latency"]
    lines = [
        "## Totals",
        "",
        f"`{res.get('command', '.venv/bin/python bench/aggregate.py')}` ({res['when']}; "
        f"{res['cpu']}): m5_tiny, "
        f"{cov['skus']} SKUs, a bundle of {cov['model']} trained up to {cov['cutoff']} "
        f"({cov['folds']}-fold backtest, {cov['blocks']} residual blocks, "
        f"{cov['paths']} joint paths per total), the next 28 days held out. Coverage: share of "
        "held-out daily totals inside the P10-P90 (target 80% +- 5 points). `joint`: from joint "
        "sample paths (what `/v1/forecast/aggregate` and `forecast-all --levels` answer); "
        "`summed`: the sum of the SKUs' calibrated P10 and P90. Coherence: the largest |total "
        "mean - sum of its SKUs' means| over every group and day.",
        "",
        "| level | groups x days | coverage joint | coverage summed | below P10 / above P90 "
        "(joint) | mean width joint / summed | coherence | WAPE bottom-up / MinT | bias "
        "bottom-up / MinT |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in [*LEVELS, "sku"]:
        e = cov["levels"][level]
        if level == "sku":
            lines.append(
                f"| sku (for reference) | {e['points']} | {pct(e['coverage_sku'])} | - | - | - | "
                f"- | {e['wape_bottom_up']:.3f} / {e['wape_mint']:.3f} | "
                f"{e['bias_bottom_up']:+.3f} / {e['bias_mint']:+.3f} |"
            )
            continue
        lines.append(
            f"| {level} | {e['groups']} x 28 | {pct(e['coverage_joint'])} | "
            f"{pct(e['coverage_summed'])} | {pct(e['below_joint'])} / {pct(e['above_joint'])} | "
            f"{e['width_joint']:.0f} / {e['width_summed']:.0f} | {e['coherence']:.1e} | "
            f"{e['wape_bottom_up']:.3f} / {e['wape_mint']:.3f} | "
            f"{e['bias_bottom_up']:+.3f} / {e['bias_mint']:+.3f} |"
        )
    lines += [
        "",
        "Latency of one `GET /v1/forecast/aggregate?level=category&key=...` through the "
        f"service's code path ({lat['computed']['repeats']} requests rotating over the "
        f"categories of {', '.join(f'{k}: {v} SKUs' for k, v in lat['computed']['skus'].items())}; "
        "the machine is shared, the 1-minute load average beside each figure):",
        "",
        "| case | median ms | p90 ms | max ms | load average |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("computed", "computed (no cache: the SKUs forecast, then the totals)"),
        ("cached", "SKU forecasts cached, totals computed"),
    ):
        e = lat[name]
        lines.append(
            f"| {label} | {e['median_ms']} | {e['p90_ms']} | {e['max_ms']} | {e['load_1m']} |"
        )
    pages = res.get("pages") or {}
    if pages:
        lines += [
            "",
            f"Dashboard pages on the same store (HTML through the whole app in-process, warm, "
            f"{lat['computed']['repeats']} requests each; the plots' data are the API calls "
            "above):",
            "",
            "| page | median ms | p90 ms | load average |",
            "|---|---:|---:|---:|",
        ]
        for path, e in pages.items():
            lines.append(f"| `{path}` | {e['median_ms']} | {e['p90_ms']} | {e['load_1m']} |")
    replayed = cov.get("replay")
    if replayed:
        lines += [
            "",
            "The same bands replayed on the bundle's own backtest (each cut-off's totals against "
            "bands from the other cut-offs' residuals, and against the other folds' calibrated "
            "SKU quantiles summed):",
            "",
            "| level | days x groups | coverage joint | coverage summed |",
            "|---|---:|---:|---:|",
        ]
        for level in LEVELS:
            e = replayed[level]
            lines.append(
                f"| {level} | {e['points']} | {pct(e['coverage_joint'])} | "
                f"{pct(e['coverage_summed'])} |"
            )
    lines += ["", "### Verdicts", ""]
    for level in ("category", "store", "total"):
        e = cov["levels"][level]
        hit = abs(e["coverage_joint"] - 0.8) <= 0.05
        further = abs(e["coverage_summed"] - 0.8) > abs(e["coverage_joint"] - 0.8)
        inside = round(e["coverage_joint"] * e["points"])
        lines.append(
            f"- **{level}: P10-P90 coverage {pct(e['coverage_joint'])} ({inside} of "
            f"{e['points']} days x groups), {'met' if hit else 'missed'}** (80% +- 5); summed "
            f"SKU quantiles {pct(e['coverage_summed'])}, "
            f"{'further from 80%' if further else 'not further'}, with bands "
            f"{e['width_summed'] / e['width_joint']:.1f}x as wide."
        )
    if replayed:
        within = [lv for lv in LEVELS if abs(replayed[lv]["coverage_joint"] - 0.8) <= 0.05]
        shown = ", ".join(f"{lv} {pct(replayed[lv]['coverage_joint'])}" for lv in LEVELS)
        lines.append(
            f"- **Backtest replay: within 80% +- 5 at {len(within)} of {len(LEVELS)} levels** "
            f"({shown}); the held-out total is 28 days of one series whose errors move together "
            "(one day is 3.6 points), weak evidence either way."
        )
    worst = max(cov["levels"][lv]["coherence"] for lv in LEVELS)
    lines.append(
        f"- **Coherence: met.** Largest |total - sum of SKU means| {worst:.1e} units at any level "
        "and day (float rounding; the API test checks every level and day to the cent)."
    )
    mint_better = [
        lv for lv in LEVELS if cov["levels"][lv]["wape_mint"] < cov["levels"][lv]["wape_bottom_up"]
    ]
    sku = cov["levels"]["sku"]
    lines.append(
        "- **MinT (shrinkage) not adopted:** with seasonal-naive totals as the aggregate base "
        "forecasts and W from the backtest's residuals, it "
        + (
            f"improves WAPE at {', '.join(mint_better)} only"
            if mint_better
            else "is worse than bottom-up at every level"
        )
        + f" and moves SKU WAPE {sku['wape_bottom_up']:.3f} -> {sku['wape_mint']:.3f}: means stay "
        "bottom-up (which also keeps them equal to the SKU forecasts)."
    )
    c, k = lat["computed"], lat["cached"]

    def verdict(e: dict[str, Any]) -> str:
        if e["p90_ms"] <= 50:
            return "met"
        return "met at the median, missed at p90" if e["median_ms"] <= 50 else "missed"

    lines.append(
        f"- **One category request <= 50 ms, SKU forecasts cached or stored (the nightly run's "
        f"case): {verdict(k)}** (median {k['median_ms']} ms, p90 {k['p90_ms']} ms at load "
        f"{k['load_1m']}); **SKU forecasts computed first: {verdict(c)}** (median "
        f"{c['median_ms']} ms, p90 {c['p90_ms']} ms at load {c['load_1m']}: the predict path for "
        "up to 120 SKUs, not the totals, which take the difference between the two rows)."
    )
    if pages:
        slowest = max(e["p90_ms"] for e in pages.values())
        lines.append(
            f"- **A page answers in <= 300 ms: {'met' if slowest <= 300 else 'missed'}** "
            f"(slowest p90 {slowest} ms over the pages above)."
        )
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(r"^## Totals\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=2, help="backtest cut-offs (the default's)")
    parser.add_argument("--trees", type=int, default=None, help="LightGBM trees (default 500)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument(
        "--store", help="an m5_tiny store (URL) whose --models champion was trained to the cut-off"
    )
    parser.add_argument("--models", type=Path, help="with --store: skip training, use this")
    parser.add_argument("--json", type=Path, help="also keep the raw results here")
    parser.add_argument(
        "--work", type=Path, help="train into this folder and keep it (for --store/--models)"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if not M5_TINY.exists():
        print(f"m5_tiny not found at {M5_TINY}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="salesfc-aggregate-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.store and args.models:
            engine = make_engine(args.store)
            bundle = Registry(args.models).load_champion()
            last = last_sales_date(engine)
            assert last is not None
            cov = evaluate(engine, bundle, last - dt.timedelta(days=HELD_OUT), last)
            cov.update(
                folds=len(bundle.manifest.metrics.get("cutoffs") or []), version=bundle.version
            )
            cov.update(engine_url=args.store, models=str(args.models))
        else:
            cov = coverage_case(work, args.folds, args.trees)
        url, models = cov.pop("engine_url"), Path(cov.pop("models"))
        lat = latency_case(url, models, args.repeats)
        pages = pages_case(url, models, args.repeats)
    res = {
        "when": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([".venv/bin/python bench/aggregate.py", *argv]),
        "cpu": cpu_model(),
        "coverage": cov,
        "latency": lat,
        "pages": pages,
    }
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    section = render(res)
    print(section)
    if not args.no_write:
        write_doc(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
