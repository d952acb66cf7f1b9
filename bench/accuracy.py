"""Held-out accuracy, dataset x method: the default champion against baselines and peers.

For each dataset a fresh SQLite store is filled and used exactly as a user would: `salesfc db
upgrade`, `salesfc ingest ...`, `salesfc train --cutoff D`, `salesfc forecast-all --as-of D
--out F` (each a subprocess of the `salesfc` command). The 28 days after the cut-off are held
out and scored for every method on the same SKUs and days: RMSSE (M5 scale from each series'
first sale, bench/peers.score_long), WAPE, total bias (sum of forecast - actual over actual) and
the share of held-out days inside P10-P90 (salesfc: its calibrated quantiles; AutoETS: its own
80% interval; flat means and seasonal naive give no interval).

Datasets: m5_tiny (daily sales with list prices, 280 SKUs), olist (real marketplace order lines,
no list prices; see OLIST_NOTE) and the synthetic real-shop traits (training.synth's "traits"
preset: order lines with paid prices, one year with a closure week, stock-outs, bulk orders,
launches and discontinued SKUs). Peers (AutoETS, mlforecast + LightGBM with its own lags and
the same exogenous columns: the price as known at the cut-off, category and store) run under
SALESFC_PEER_PYTHON (pandas < 3, `make bench` builds .venv-peers) through bench/peers.py.

Usage: python bench/accuracy.py [--quick] [--datasets m5,olist,synth] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from peers import interval_coverage, score_long  # noqa: E402
from train import machine  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
M5_TINY = DATA / "m5_tiny" / "tiny_m5.parquet"
OLIST = DATA / "olist"
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Accuracy on order-line data"
HORIZON = 28
PEER_PYTHON = os.environ.get("SALESFC_PEER_PYTHON", str(ROOT / ".venv-peers" / "bin" / "python"))
SALESFC = str(Path(sys.executable).parent / "salesfc")
# olist's lines fall from ~400 a day in mid-August 2018 to a few in September: the held-out
# 28 days end before that fall (2018-07-16 .. 2018-08-12).
OLIST_CUTOFF = dt.date(2018, 7, 15)
# Products scored on olist: at least this many selling days up to the cut-off.
OLIST_MIN_DAYS = 15
OLIST_NOTE = (
    "olist: all 32,951 products are ingested and trained on (the user path); scored are the "
    f"products with at least {OLIST_MIN_DAYS} selling days up to the cut-off (726; with 5 "
    "days 3,585 and with 10 1,372, too many for AutoETS in this run's time on a shared 2-core "
    "machine; most others sold once or twice in two years: every method forecasts ~0 for "
    "them and RMSSE, scaled by a near-zero naive error, would measure noise). On such sparse "
    "series WAPE is the volume-weighted error of the few sales; RMSSE the per-series error "
    "against the one-step naive forecast. The peers train on the scored products' series "
    "only (AutoETS is local anyway; mlforecast's global model on all 32,951 dense series "
    "would not fit this run's time), salesfc on all of them."
)
TARGET_GAIN = 0.05  # the champion beats the best peer per metric by at least 5%
TARGET_BIAS = 0.05
TARGET_COVERAGE = (0.75, 0.85)
PEERS = ("seasonal naive", "flat mean 28 d", "flat mean 56 d", "AutoETS", "mlforecast LightGBM")
CHAMPION = "salesfc default champion"


@dataclass
class Dataset:
    """A dataset as files to ingest (entity, file, --map pairs) and its cut-off."""

    name: str
    files: list[tuple[str, Path, list[str]]]
    cutoff: dt.date | None  # None: the last sales day minus the horizon
    min_selling_days: int = 1
    note: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


def _log(msg: str) -> None:
    print(f"[bench/accuracy] {msg}", file=sys.stderr, flush=True)


def salesfc(env: dict[str, str], *args: str) -> str:
    """Run one `salesfc` command as a user would; its stdout (stderr passes through)."""
    _log("salesfc " + " ".join(args))
    proc = subprocess.run(
        [SALESFC, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"salesfc {' '.join(args)} failed with exit code {proc.returncode}")
    return proc.stdout


# ---------------------------------------------------------------- datasets


def m5_dataset(work: Path, quick: bool) -> Dataset:
    """m5_tiny through `salesfc ingest m5` (quick: its first 60 SKUs)."""
    path = M5_TINY
    if quick:
        raw = pd.read_parquet(M5_TINY)
        keep = sorted(raw["id"].unique())[:60] if "id" in raw else None
        if keep is not None:
            raw = raw[raw["id"].isin(keep)]
        else:
            items = sorted(raw["item_id"].unique())[:20]
            raw = raw[raw["item_id"].isin(items)]
        path = work / "m5_quick.parquet"
        raw.to_parquet(path, index=False)
    return Dataset("m5_tiny", [("m5", path, [])], cutoff=None)


def olist_dataset(work: Path, quick: bool) -> Dataset:
    """olist order lines and products through `salesfc ingest products|orders` with --map."""
    lines, products = OLIST / "order_lines.parquet", OLIST / "products.parquet"
    if quick:  # the 2,000 products with the most lines, all their lines
        raw = pd.read_parquet(lines)
        top = raw["product_id"].value_counts().index[:2000]
        lines = work / "olist_lines_quick.parquet"
        raw[raw["product_id"].isin(top)].to_parquet(lines, index=False)
        prods = pd.read_parquet(products)
        products = work / "olist_products_quick.parquet"
        prods[prods["product_id"].isin(top)].to_parquet(products, index=False)
    return Dataset(
        "olist",
        [
            ("products", products, ["sku=product_id", "category=product_category_name_english"]),
            (
                "orders",
                lines,
                [
                    "line=order_item_id",
                    "sku=product_id",
                    "ordered_at=shipping_limit_date",
                    "unit_price=price",
                ],
            ),
        ],
        cutoff=OLIST_CUTOFF,
        min_selling_days=OLIST_MIN_DAYS,
        note=OLIST_NOTE,
    )


def synth_dataset(work: Path, quick: bool) -> Dataset:
    """training.synth's real-shop traits preset, written as files and ingested like an export."""
    from training.synth import traits_config, traits_export

    cfg = traits_config(n_skus=120 if quick else 400)
    export = traits_export(cfg)
    products, lines = work / "synth_products.parquet", work / "synth_order_lines.parquet"
    export.products.to_parquet(products, index=False)
    export.order_lines.to_parquet(lines, index=False)
    return Dataset(
        "synthetic traits",
        [("products", products, []), ("orders", lines, [])],
        cutoff=None,
        note=(
            f"synthetic traits: {cfg.n_skus} SKUs, {cfg.n_days} days of order lines with paid "
            "prices and no price file, a closure week, stock-out runs, bulk orders, launches "
            "and discontinued SKUs (training.synth.traits_export)."
        ),
        facts=export.facts,
    )


DATASETS: dict[str, Callable[[Path, bool], Dataset]] = {
    "m5": m5_dataset,
    "olist": olist_dataset,
    "synth": synth_dataset,
}


# ---------------------------------------------------------------- one dataset


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["SALESFC_DATABASE_URL"] = f"sqlite:///{work / 'store.db'}"
    env["SALESFC_MODELS_DIR"] = str(work / "models")
    env["SALESFC_DATA_DIR"] = str(work / "data")
    env.setdefault("OMP_WAIT_POLICY", "passive")
    return env


def _frames(
    env: dict[str, str], cutoff: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """History as known at the cut-off (held-out days: covariates only), actuals and products."""
    from featurestore.db import make_engine
    from featurestore.readers import read_frame, read_products

    engine = make_engine(env["SALESFC_DATABASE_URL"])
    end = cutoff + dt.timedelta(days=HORIZON)
    known = read_frame(engine, end=end, as_of=cutoff)
    actual = read_frame(engine, start=cutoff + dt.timedelta(days=1), end=end)
    products = read_products(engine)
    engine.dispose()
    return known, actual[["sku", "date", "units"]], products


def _scored(known: pd.DataFrame, cutoff: dt.date, min_days: int) -> np.ndarray:
    """SKUs live at the cut-off with at least ``min_days`` selling days up to it."""
    past = known[known["date"] <= pd.Timestamp(cutoff)]
    live = set(past.loc[past["date"] == pd.Timestamp(cutoff), "sku"])
    days = past[past["units"] > 0].groupby("sku").size()
    return np.array(sorted(s for s in days[days >= min_days].index if s in live), dtype=object)


def _flat(train: pd.DataFrame, dates: pd.DatetimeIndex, fn: Callable[[np.ndarray], float]) -> Any:
    wide = train.pivot(index="sku", columns="date", values="y")
    values = np.array([fn(row) for row in wide.to_numpy(dtype=np.float64)])
    return pd.DataFrame(
        {
            "sku": np.repeat(wide.index.to_numpy(), len(dates)),
            "date": np.tile(dates.to_numpy(), len(wide)),
            "yhat": np.repeat(values, len(dates)),
        }
    )


def _mean_last(window: int) -> Callable[[np.ndarray], float]:
    def fn(row: np.ndarray) -> float:
        tail = row[-window:]
        tail = tail[~np.isnan(tail)]
        return float(tail.mean()) if len(tail) else 0.0

    return fn


def _seasonal_naive(train: pd.DataFrame, dates: pd.DatetimeIndex) -> pd.DataFrame:
    last = train.groupby("sku", sort=False).tail(7)
    last = last.assign(dow=last["date"].dt.day_of_week)[["sku", "dow", "y"]]
    skus = train["sku"].unique()
    grid = pd.DataFrame(
        {"sku": np.repeat(skus, len(dates)), "date": np.tile(dates.to_numpy(), len(skus))}
    )
    out = grid.assign(dow=grid["date"].dt.day_of_week).merge(last, on=["sku", "dow"], how="left")
    return out.rename(columns={"y": "yhat"})[["sku", "date", "yhat"]].fillna({"yhat": 0.0})


ORACLE_SHAPES = ("flat", "own", "catalogue")


def oracle_wape(actual: pd.DataFrame, train: pd.DataFrame, cutoff: dt.date, shape: str) -> float:
    """The least held-out WAPE of a forecast that knows the held-out days in advance but may
    only pick one level per SKU, times a weekday shape known at the cut-off (``shape``: none,
    the SKU's own of its last training year as training.estimators.baselines.weekday_shape
    gives it, or the scored catalogue's), with the total bias within TARGET_BIAS: a linear
    programme, min sum |y - s c[sku]| s.t. |sum s c - sum y| <= 5% of sum y.

    No forecast knows each SKU's coming level; a WAPE target below this floor asks for more
    than the SKU's level and weekday shape (the day each order comes).
    """
    import scipy.sparse as sp
    from scipy.optimize import linprog

    from training.estimators.baselines import SHAPE_PRIOR_UNITS, weekday_shape

    y = actual["y"].to_numpy(np.float64)
    code, skus = pd.factorize(actual["sku"])
    k, n = len(skus), len(y)
    weight = np.ones(n)
    if shape != "flat":
        wide = train.pivot(index="sku", columns="date", values="y").reindex(skus)
        wide = wide.reindex(columns=pd.date_range(wide.columns.min(), cutoff, freq="D"))
        matrix = wide.to_numpy(dtype=np.float64)
        if shape == "catalogue":
            matrix = np.nansum(matrix, axis=0, keepdims=True)
        prior = 0.0 if shape == "catalogue" else SHAPE_PRIOR_UNITS  # the shaped baselines'
        factors = weekday_shape(matrix, HORIZON, prior_units=prior)
        day = (actual["date"] - pd.Timestamp(cutoff)).dt.days.to_numpy() - 1
        weight = factors[0 if shape == "catalogue" else code, day]
    rows = np.arange(n)
    cols = np.r_[code, k + rows]
    # e >= y - w c and e >= w c - y, over the variables (c per SKU, e per row)
    under = sp.csr_matrix((np.r_[-weight, -np.ones(n)], (np.r_[rows, rows], cols)), (n, k + n))
    over = sp.csr_matrix((np.r_[weight, -np.ones(n)], (np.r_[rows, rows], cols)), (n, k + n))
    total = sp.csr_matrix(np.r_[np.bincount(code, weights=weight, minlength=k), np.zeros(n)])
    units = float(y.sum())
    res = linprog(
        np.r_[np.zeros(k), np.ones(n)],
        A_ub=sp.vstack([under, over, total, -total]),
        b_ub=np.r_[-y, y, units * (1 + TARGET_BIAS), -units * (1 - TARGET_BIAS)],
        bounds=(0, None),
        method="highs",
    )
    if res.status != 0:
        raise RuntimeError(f"the oracle's linear programme failed: {res.message}")
    return float(res.fun / units)


def coverage_floor(actual: pd.DataFrame, train: pd.DataFrame, cutoff: dt.date) -> float:
    """The least P10-P90 coverage calibrated quantiles can give: the share of held-out rows
    with no sale among SKUs that went without a sale on at least 10% of their last year's
    days. Their chance of a zero day is at least 10%, so their P10 is 0 and a zero actual lies
    inside any P10-P90 band."""
    year = train[train["date"] > pd.Timestamp(cutoff) - pd.Timedelta(days=364)]
    zero_share = year["y"].eq(0).groupby(year["sku"]).mean()
    often_zero = actual["sku"].map(zero_share).fillna(1.0).to_numpy() >= 0.1
    return float(np.mean(often_zero & (actual["y"].to_numpy() == 0)))


PEER_NAMES = {"ets": "AutoETS", "mlforecast": "mlforecast LightGBM"}


def start_peers(
    work: Path, known: pd.DataFrame, products: pd.DataFrame, scored: np.ndarray, cutoff: dt.date
) -> subprocess.Popen[str]:
    """Start AutoETS and mlforecast on the scored SKUs (bench/peers.py under PEER_PYTHON); they
    run while salesfc trains. mlforecast trains on the scored SKUs' series (see OLIST_NOTE)."""
    attrs = products.set_index("sku")[["category", "store"]]
    frame = known[["sku", "date", "units", "price"]].rename(columns={"units": "y"})
    frame = frame[frame["sku"].isin(scored)].join(attrs, on="sku")
    frame[["category", "store"]] = frame[["category", "store"]].fillna("unknown")
    frame["price"] = frame["price"].astype(np.float64)
    frame["y"] = frame["y"].astype(np.float64)
    frame.loc[frame["date"] > pd.Timestamp(cutoff), "y"] = np.nan
    frame["scored"] = True
    frame["sku"] = frame["sku"].astype(str)
    data = work / "peers_frame.parquet"
    frame.to_parquet(data, index=False)
    out = work / "peers_pred.parquet"
    cmd = [PEER_PYTHON, str(BENCH / "peers.py"), "heldout", "--data", str(data), "--out", str(out)]
    _log("peers: " + " ".join(cmd[2:]))
    env = dict(os.environ, OMP_WAIT_POLICY="passive", PYTHONHASHSEED="0")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def finish_peers(
    proc: subprocess.Popen[str], work: Path
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """Wait for the peers; their forecasts by method name and their timings."""
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"peers failed with exit code {proc.returncode}")
    stats = json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])
    pred = pd.read_parquet(work / "peers_pred.parquet")
    pred["date"] = pd.to_datetime(pred["date"])
    pred["sku"] = pred["sku"].astype(object)
    return {PEER_NAMES[m]: g.drop(columns="method") for m, g in pred.groupby("method")}, stats


def _score(
    actual: pd.DataFrame, pred: pd.DataFrame, train: pd.DataFrame, band: bool
) -> dict[str, Any]:
    out = score_long(actual, pred[["sku", "date", "yhat"]], train)
    cov = interval_coverage(actual, pred[["sku", "date", "lo", "hi"]]) if band else None
    return {
        "rmsse": out["rmsse"],
        "rmsse_untrimmed": out["rmsse_untrimmed"],
        "wape": out["wape"],
        "bias": out["bias"],
        "coverage": cov,
    }


def run_dataset(ds: Dataset, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Ingest, train, forecast-all and score every method on one dataset."""
    env = _env(work)
    salesfc(env, "db", "upgrade")
    for entity, path, mapping in ds.files:
        maps = [a for pair in mapping for a in ("--map", pair)]
        salesfc(env, "ingest", entity, str(path), *maps)
    from featurestore.db import make_engine
    from featurestore.readers import last_sales_date

    engine = make_engine(env["SALESFC_DATABASE_URL"])
    last = last_sales_date(engine)
    engine.dispose()
    assert last is not None
    cutoff = ds.cutoff or last - dt.timedelta(days=HORIZON)
    known, actual_frame, products = _frames(env, cutoff)
    scored = _scored(known, cutoff, ds.min_selling_days)
    peers = None if args.no_peers else start_peers(work, known, products, scored, cutoff)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    train_args = ["train", "--cutoff", cutoff.isoformat(), "--promote", "always"]
    if args.folds is not None:
        train_args += ["--folds", str(args.folds)]
    if args.metric is not None:
        train_args += ["--metric", args.metric]
    salesfc(env, *train_args)
    fit_seconds = time.perf_counter() - t0
    load1 = os.getloadavg()[0]
    fc_path = work / "forecast.parquet"
    salesfc(
        env,
        "forecast-all",
        "--as-of",
        cutoff.isoformat(),
        "--horizon",
        str(HORIZON),
        "--out",
        str(fc_path),
        "--no-store",
    )
    past = known[(known["date"] <= pd.Timestamp(cutoff)) & known["units"].notna()]
    train = past[past["sku"].isin(scored)][["sku", "date", "units"]].rename(columns={"units": "y"})
    train["y"] = train["y"].astype(np.float64)
    actual = actual_frame[actual_frame["sku"].isin(scored) & actual_frame["units"].notna()]
    actual = actual.rename(columns={"units": "y"}).astype({"y": np.float64})
    dates = pd.date_range(cutoff + dt.timedelta(days=1), periods=HORIZON, freq="D")
    fc = pd.read_parquet(fc_path)
    fc["date"] = pd.to_datetime(fc["date"])
    fc["sku"] = fc["sku"].astype(object)
    champion = fc.rename(columns={"mean": "yhat", "p10": "lo", "p90": "hi"})
    methods: dict[str, tuple[pd.DataFrame, bool]] = {
        CHAMPION: (champion, True),
        "seasonal naive": (_seasonal_naive(train, dates), False),
        "flat mean 28 d": (_flat(train, dates, _mean_last(28)), False),
        "flat mean 56 d": (_flat(train, dates, _mean_last(56)), False),
    }
    peer_stats: dict[str, Any] = {}
    if peers is not None:
        peer_preds, peer_stats = finish_peers(peers, work)
        for name, pred in peer_preds.items():
            methods[name] = (pred, name == "AutoETS")
    scores = {}
    for name, (pred, band) in methods.items():
        scores[name] = _score(actual, pred, train, band)
        _log(f"{ds.name} / {name}: {scores[name]}")
    model = _champion_model(work)
    oracle = {shape: oracle_wape(actual, train, cutoff, shape) for shape in ORACLE_SHAPES}
    _log(f"{ds.name} / oracle WAPE floors: {oracle}")
    floor = coverage_floor(actual, train, cutoff)
    _log(f"{ds.name} / coverage floor of calibrated quantiles: {floor}")
    return {
        "dataset": ds.name,
        "cutoff": cutoff.isoformat(),
        "skus_ingested": int(products["sku"].nunique()),
        "skus_scored": len(scored),
        "rows_scored": len(actual),
        "units_scored": float(actual["y"].sum()),
        "note": ds.note,
        "facts": ds.facts,
        "champion_model": model,
        "train_seconds": round(fit_seconds, 1),
        "load_avg": [round(load0, 2), round(load1, 2)],
        "peer_stats": peer_stats,
        "scores": scores,
        "oracle_wape": oracle,
        "coverage_floor": floor,
    }


def _champion_model(work: Path) -> str:
    """The shipped model of the champion bundle (from its manifest)."""
    alias = work / "models" / "champion"
    target = alias.resolve() if alias.exists() else None
    manifest = (target or work / "models") / "manifest.json"
    if not manifest.exists():
        found = sorted((work / "models").glob("*/manifest.json"))
        if not found:
            return "?"
        manifest = found[-1]
    doc = json.loads(manifest.read_text())
    return str(doc.get("metrics", {}).get("champion_model", "?"))


# ---------------------------------------------------------------- verdicts and rendering


def verdict(scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Best peer per metric and whether the champion meets each target."""
    champ = scores[CHAMPION]
    peers = {n: s for n, s in scores.items() if n != CHAMPION}
    out: dict[str, Any] = {}
    for metric in ("rmsse", "wape"):
        best = min(peers, key=lambda n: peers[n][metric])
        bound = peers[best][metric] * (1 - TARGET_GAIN)
        out[metric] = {
            "best_peer": best,
            "best_value": peers[best][metric],
            "bound": bound,
            "champion": champ[metric],
            "gain": 1 - champ[metric] / peers[best][metric] if peers[best][metric] else None,
            "met": champ[metric] <= bound,
        }
    out["bias"] = {"champion": champ["bias"], "met": abs(champ["bias"]) <= TARGET_BIAS}
    cov = champ["coverage"]
    out["coverage"] = {
        "champion": cov,
        "met": cov is not None and TARGET_COVERAGE[0] <= cov <= TARGET_COVERAGE[1],
    }
    return out


def _f(value: Any, fmt: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return format(value, fmt)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render(
    results: list[dict[str, Any]], cmd: str, quick: bool, notes: list[str] | None = None
) -> str:
    """The markdown section: one table, the verdicts and the notes."""
    m = machine()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        SECTION,
        "",
        f"Measured {when}{' (--quick)' if quick else ''}; reproduce: `{cmd}`. Each dataset is "
        "ingested into a fresh SQLite store with `salesfc ingest`, the champion trained with "
        "`salesfc train --cutoff D` (default candidates and folds) and forecast with "
        "`salesfc forecast-all --as-of D`; the 28 days after D are held out. Every method "
        "is scored on the same SKUs and days. RMSSE scales by the one-step naive error from "
        "each series' first sale (RMSSE* by every training day); bias = (sum of forecasts - "
        "sum of actuals) / sum of actuals; coverage = held-out days inside P10-P90 (salesfc: "
        "calibrated quantiles; AutoETS: its 80% interval; the others give none). mlforecast: "
        "LightGBM tweedie, 500 trees, lags 1/7/14/28, rolling means, weekday and month, "
        "with the price as known at the cut-off, category and store.",
        "",
        "| dataset | method | RMSSE | RMSSE* | WAPE | bias | P10-P90 coverage |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for name, s in r["scores"].items():
            label = f"**{name}** ({r['champion_model']})" if name == CHAMPION else name
            lines.append(
                f"| {r['dataset']} | {label} | {_f(s['rmsse'])} | {_f(s['rmsse_untrimmed'])} | "
                f"{_f(s['wape'])} | {_f(s['bias'], '+.3f')} | {_pct(s['coverage'])} |"
            )
    lines += ["", "Targets (the champion against the best peer per metric, >= 5% better):", ""]
    for r in results:
        v = verdict(r["scores"])
        parts = []
        for metric in ("rmsse", "wape"):
            x = v[metric]
            parts.append(
                f"{metric.upper()} {_f(x['champion'])} vs {x['best_peer']} "
                f"{_f(x['best_value'])} (needs <= {_f(x['bound'])}, gain "
                f"{_pct(x['gain'])}) - **{'met' if x['met'] else 'missed'}**"
            )
        parts.append(
            f"bias {_f(v['bias']['champion'], '+.3f')} - "
            f"**{'met' if v['bias']['met'] else 'missed'}**"
        )
        parts.append(
            f"coverage {_pct(v['coverage']['champion'])} - "
            f"**{'met' if v['coverage']['met'] else 'missed'}**"
        )
        lines.append(
            f"- {r['dataset']} (cut-off {r['cutoff']}, {r['skus_scored']:,} of "
            f"{r['skus_ingested']:,} SKUs scored, {r['rows_scored']:,} rows): " + "; ".join(parts)
        )
        if r.get("oracle_wape"):
            o, bound = r["oracle_wape"], v["wape"]["bound"]
            floor = min(o.values())
            lines.append(
                "  - WAPE floor of a forecast that knows each SKU's held-out days and picks its "
                f"best level (total bias within +-{TARGET_BIAS:.0%}; oracle_wape): "
                f"{_f(o['flat'])} flat, {_f(o['own'])} times the SKU's weekday shape, "
                f"{_f(o['catalogue'])} times the catalogue's; the target {_f(bound)} "
                + (
                    "is below all three"
                    if bound < floor
                    else f"lies {bound / floor - 1:.1%} above the lowest, the champion "
                    f"{v['wape']['champion'] / floor - 1:.1%}"
                )
            )
        if r.get("coverage_floor") is not None:
            cover = r["coverage_floor"]
            lines.append(
                f"  - Coverage floor of calibrated quantiles (coverage_floor): {_pct(cover)} of "
                "the rows are days without a sale of SKUs that go without one on at least 10% "
                "of days (their P10 is 0, so a zero lies inside the band)"
                + (
                    f": above the target's {TARGET_COVERAGE[1]:.0%}, which only quantiles that "
                    "put P10 above 0 where a zero is likelier than 10% could meet"
                    if cover > TARGET_COVERAGE[1]
                    else ""
                )
            )
    lines += ["", "Notes:", ""]
    for r in results:
        timing = (
            f"`salesfc train` {r['train_seconds']} s (1-min load {r['load_avg'][0]} -> "
            f"{r['load_avg'][1]}, shared machine)"
        )
        peer = r["peer_stats"].get("fit_seconds")
        if peer:
            timing += "; peers " + ", ".join(f"{k} {v} s" for k, v in peer.items())
        label = r["note"] or f"{r['dataset']}:"
        lines.append(f"- {label} {timing}.")
        if r["facts"]:
            lines.append(
                "  Traits present: " + ", ".join(f"{k} {v}" for k, v in r["facts"].items()) + "."
            )
    lines += [f"- {n}" for n in notes or []]
    lines += [
        "",
        f"Machine: nproc {m['nproc']}, memory {m['memory']}, cpu {m['cpu']}, os {m['os']}.",
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str, doc: Path = DOC) -> None:
    """Replace (or add) this script's section up to its first subsection, leaving the other
    sections and the section's own subsections (the studies written by hand) alone."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\n"
    pattern = re.compile(r"^" + re.escape(SECTION) + r"\n.*?(?=^##+ |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    doc.write_text(text.rstrip("\n") + "\n")


def main(argv: list[str]) -> int:
    """Run the datasets, print the table, and write the section when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer SKUs and one fold")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--folds", type=int, default=None, help="salesfc train --folds")
    parser.add_argument("--metric", default=None, help="salesfc train --metric (selection)")
    parser.add_argument("--no-peers", action="store_true", help="skip AutoETS and mlforecast")
    parser.add_argument("--write", action="store_true", help=f"write {DOC.name}'s section")
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON")
    parser.add_argument("--note", action="append", help="--render: add a line to the notes")
    parser.add_argument(
        "--render", help="no run: render the results of earlier --json files (comma-separated)"
    )
    args = parser.parse_args(argv)
    if args.render:
        results = [r for f in args.render.split(",") for r in json.loads(Path(f).read_text())]
        commands = dict.fromkeys(str(r.get("command", "")) for r in results)
        section = render(
            results, "`; `".join(c for c in commands if c), bool(args.quick), args.note
        )
        print(section)
        if args.write:
            write_section(section)
        return 0
    if args.quick and args.folds is None:
        args.folds = 1
    results = []
    cmd = "python bench/accuracy.py " + " ".join(argv)
    for key in [d for d in args.datasets.split(",") if d]:
        if key not in DATASETS:
            parser.error(f"unknown dataset {key!r}; choose from {', '.join(DATASETS)}")
        with tempfile.TemporaryDirectory(prefix=f"salesfc-acc-{key}-") as tmp:
            work = Path(tmp)
            results.append(run_dataset(DATASETS[key](work, args.quick), work, args))
            results[-1]["command"] = cmd.strip()
        if args.json:  # after each dataset, so a stopped run keeps the finished ones
            args.json.write_text(json.dumps(results, indent=2, default=str))
    section = render(results, cmd.strip(), args.quick)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.write:
        write_section(section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
