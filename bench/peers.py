"""Peer cases for bench/train.py: seasonal naive, statsforecast AutoETS, mlforecast + LightGBM.

bench/train.py runs each case in a fresh subprocess (so its peak RSS is that case alone) and reads
the one JSON line it prints. mlforecast 1.1 and statsforecast 2.1 require pandas < 3 while salesfc
runs on pandas 3, so these cases run under a separate interpreter with the bench extras
(``--peer-python``, see docs/benchmarks.md); this module imports only numpy/pandas at the top and
training.metrics (numpy/pandas only) for the scores, so both interpreters can import it.

Usage: python bench/peers.py m5 {snaive,ets,mlforecast} [--trees 500] [--threads 2]
       python bench/peers.py frame --data FILE.parquet [--trees 500] [--threads 2]
       python bench/peers.py heldout --data FRAME.parquet --out PRED.parquet
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import sys
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from training.metrics import coverage, naive_scale, rmsse, wape  # noqa: E402

M5_TINY = ROOT.parent / "shared" / "data" / "m5_tiny" / "tiny_m5.parquet"
HORIZON = 28
LAGS = (1, 7, 14, 28)
# Rolling means (lag:window): the "rolling means of lags 7 and 28".
ROLLING = "7:28,28:28"


# ---------------------------------------------------------------- shared with bench/train.py


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB: its own, not its parent's.

    Linux's ``ru_maxrss`` is no use in a benchmark child: it carries the high-water mark of the
    memory the process had before ``exec`` - the spawning parent's whole resident set (measured
    here: a child of a 1.5 GiB parent reported 1,513 MiB with a 13 MiB VmHWM). VmHWM in
    /proc/self/status is the high-water mark of this program's own address space.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """This process's current resident set size, in MiB."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def versions(*names: str) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones are left out)."""
    out = {"python": sys.version.split()[0]}
    for name in names:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    return out


def score_long(
    actual: pd.DataFrame, pred: pd.DataFrame, train: pd.DataFrame, *, key: str = "sku"
) -> dict[str, Any]:
    """RMSSE (M5 scale from ``train``) and WAPE of ``pred`` (key, date, yhat) against ``actual``.

    ``actual`` and ``train`` are long frames (key, date, y); every actual row must be forecast.
    """
    wide_train = train.pivot(index=key, columns="date", values="y").sort_index()
    wide_y = actual.pivot(index=key, columns="date", values="y").reindex(wide_train.index)
    wide_hat = pred.pivot(index=key, columns="date", values="yhat").reindex(
        index=wide_y.index, columns=wide_y.columns
    )
    y = wide_y.to_numpy(dtype=np.float64)
    yhat = wide_hat.to_numpy(dtype=np.float64)
    known = ~np.isnan(y)
    missing = int(np.count_nonzero(known & np.isnan(yhat)))
    if missing:
        raise ValueError(f"{missing} actual rows have no forecast")
    yhat = np.where(known, yhat, np.nan)
    scale = naive_scale(wide_train.to_numpy(dtype=np.float64), power=2)
    sc = rmsse(y, yhat, scale_sq=scale)
    # The quoted figures scale by every training day, leading zeros included.
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        untrimmed = np.nanmean(np.diff(wide_train.to_numpy(dtype=np.float64), axis=1) ** 2, axis=1)
    return {
        "rmsse": sc.value,
        "rmsse_untrimmed": rmsse(y, yhat, scale_sq=untrimmed).value,
        "wape": wape(y[known], yhat[known]),
        "bias": float(np.sum(yhat[known] - y[known]) / np.sum(y[known])),
        "n_series_scored": sc.n_series,
        "n_series_excluded": sc.n_excluded,
        "n_rows_scored": int(np.count_nonzero(known)),
    }


def interval_coverage(actual: pd.DataFrame, band: pd.DataFrame, *, key: str = "sku") -> float:
    """Share of actual rows (key, date, y) inside band's [lo, hi] (key, date, lo, hi)."""
    m = actual.merge(band, on=[key, "date"], how="left", validate="one_to_one")
    return coverage(m["y"].to_numpy(), m["lo"].to_numpy(), m["hi"].to_numpy())


def emit(result: dict[str, Any]) -> None:
    """Print the case's one JSON line (NaN as null)."""
    print(json.dumps(result, default=_json_default, allow_nan=False, sort_keys=False), flush=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat()
    raise TypeError(f"not JSON: {type(value).__name__}")


# ---------------------------------------------------------------- data


def load_m5(path: Path = M5_TINY) -> pd.DataFrame:
    """m5_tiny as a long frame: sku (item_store), date, y, price, category, store."""
    raw = pd.read_parquet(
        path, columns=["item_id", "store_id", "cat_id", "date", "value", "sell_price"]
    )
    frame = pd.DataFrame(
        {
            "sku": (raw["item_id"].astype(str) + "_" + raw["store_id"].astype(str)).astype(object),
            "date": pd.to_datetime(raw["date"]),
            "y": raw["value"].astype(np.float64),
            "price": raw["sell_price"].astype(np.float64),
            "category": raw["cat_id"].astype(str).astype(object),
            "store": raw["store_id"].astype(str).astype(object),
        }
    )
    return frame.sort_values(["sku", "date"], kind="stable").reset_index(drop=True)


def split(frame: pd.DataFrame, horizon: int = HORIZON) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on every day but the last ``horizon``; test on those."""
    cutoff = frame["date"].max() - pd.Timedelta(days=horizon)
    train = frame[frame["date"] <= cutoff].reset_index(drop=True)
    test = frame[frame["date"] > cutoff].reset_index(drop=True)
    return train, test


# ---------------------------------------------------------------- methods


def seasonal_naive(train: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    """Weekly seasonal naive: each test day repeats the same weekday of the last training week."""
    last = train.groupby("sku", sort=False).tail(7)
    last = last.assign(dow=last["date"].dt.dayofweek)[["sku", "dow", "y"]]
    out = test[["sku", "date"]].assign(dow=test["date"].dt.dayofweek)
    out = out.merge(last, on=["sku", "dow"], how="left")
    return out.rename(columns={"y": "yhat"})[["sku", "date", "yhat"]]


def auto_ets(
    train: pd.DataFrame, horizon: int, threads: int, level: int = 80
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """statsforecast AutoETS(season_length=7) per series; mean and the ``level``% band."""
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    sf = StatsForecast(models=[AutoETS(season_length=7)], freq="D", n_jobs=threads)
    df = train.rename(columns={"sku": "unique_id", "date": "ds"})[["unique_id", "ds", "y"]]
    fc = sf.forecast(df=df, h=horizon, level=[level]).reset_index(drop=True)
    fc = fc.rename(columns={"unique_id": "sku", "ds": "date"})
    pred = fc.assign(yhat=fc["AutoETS"])[["sku", "date", "yhat"]]
    band = fc.assign(lo=fc[f"AutoETS-lo-{level}"], hi=fc[f"AutoETS-hi-{level}"])
    return pred, band[["sku", "date", "lo", "hi"]]


def parse_rolling(spec: str) -> dict[int, list[int]]:
    """'7:7,28:28' -> {7: [7], 28: [28]}: rolling-mean windows per lag."""
    out: dict[int, list[int]] = {}
    for part in spec.split(","):
        lag, window = (int(v) for v in part.split(":"))
        out.setdefault(lag, []).append(window)
    return out


def mlforecast_model(trees: int, threads: int, rolling: str = ROLLING) -> Any:
    """The issue's default mlforecast + LightGBM (tweedie) configuration."""
    from lightgbm import LGBMRegressor
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean

    model = LGBMRegressor(
        objective="tweedie", n_estimators=trees, n_jobs=threads, verbosity=-1, random_state=0
    )
    return MLForecast(
        models={"lgbm": model},
        freq="D",
        lags=list(LAGS),
        lag_transforms={
            lag: [RollingMean(window_size=w) for w in windows]
            for lag, windows in parse_rolling(rolling).items()
        },
        date_features=["dayofweek", "month"],
        num_threads=threads,
    )


def mlforecast_run(
    train: pd.DataFrame,
    test: pd.DataFrame,
    trees: int,
    threads: int,
    rolling: str = ROLLING,
    backtest_folds: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit on train (price dynamic; category and store static), forecast the test days; with
    ``backtest_folds``, then cross-validate on train as salesfc backtests (that many windows of
    the horizon, one horizon apart, ending at train's last day; refitted per window)."""
    fcst = mlforecast_model(trees, threads, rolling)

    def prepare(f: pd.DataFrame) -> pd.DataFrame:
        out = f.rename(columns={"sku": "unique_id", "date": "ds"})
        if os.environ.get("PEERS_STATIC_CODES"):  # exploration: integer codes, not categorical
            return out.assign(
                category=out["category"].astype("category").cat.codes,
                store=out["store"].astype("category").cat.codes,
            )
        return out.astype({"category": "category", "store": "category"})

    df = prepare(train)[["unique_id", "ds", "y", "price", "category", "store"]]
    horizon = test["date"].nunique()
    t0 = time.perf_counter()
    prep = fcst.preprocess(df, static_features=["category", "store"])
    n_rows, n_features = len(prep), prep.shape[1] - 3
    del prep
    t_prep = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    fcst.fit(df, static_features=["category", "store"])
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
    x_df = prepare(test)[["unique_id", "ds", "price"]]
    t0 = time.perf_counter()
    fc = fcst.predict(horizon, X_df=x_df, ids=sorted(test["sku"].unique()))
    t_pred = time.perf_counter() - t0
    fc = fc.rename(columns={"unique_id": "sku", "ds": "date", "lgbm": "yhat"})
    fc["sku"] = fc["sku"].astype(object)
    stats: dict[str, Any] = {}
    if backtest_folds > 0:
        peak_to_predict = peak_rss_mb()
        t0 = time.perf_counter()
        fcst.cross_validation(
            df,
            n_windows=backtest_folds,
            h=horizon,
            step_size=horizon,
            static_features=["category", "store"],
        )
        stats["backtest_folds"] = backtest_folds
        stats["phase_seconds"] = {"backtest": round(time.perf_counter() - t0, 2)}
        stats["phase_peak_rss_mb"] = {
            "predict": round(peak_to_predict, 1),
            "backtest": round(peak_rss_mb(), 1),
        }
    stats |= {
        "train_rows": n_rows,
        "n_features": n_features,
        "features_seconds": round(t_prep, 2),
        "fit_seconds": round(t_fit, 2),
        "fit_cpu_seconds": round(c_fit, 2),
        "predict_seconds": round(t_pred, 2),
    }
    return fc[["sku", "date", "yhat"]], stats


# ---------------------------------------------------------------- cases


def case_m5(
    method: str, trees: int, threads: int, rolling: str = ROLLING, backtest_folds: int = 0
) -> dict[str, Any]:
    """One peer on m5_tiny: last 28 days held out, trained on everything before."""
    t_start = time.perf_counter()
    frame = load_m5()
    train, test = split(frame)
    base_rss = rss_mb()
    out: dict[str, Any] = {
        "case": f"m5/{method}",
        "method": method,
        "series": frame["sku"].nunique(),
    }
    t0 = time.perf_counter()
    if method == "snaive":
        pred = seasonal_naive(train, test)
        out["fit_seconds"] = round(time.perf_counter() - t0, 2)
    elif method == "ets":
        pred, band = auto_ets(train, HORIZON, threads)
        out["fit_seconds"] = round(time.perf_counter() - t0, 2)
        out["coverage_p10_p90"] = interval_coverage(test[["sku", "date", "y"]], band)
    elif method == "mlforecast":
        pred, stats = mlforecast_run(train, test, trees, threads, rolling, backtest_folds)
        out.update(stats, trees=trees, rolling=rolling)
    else:
        raise SystemExit(f"unknown method {method!r}")
    out["method_seconds"] = round(time.perf_counter() - t0, 2)
    out.update(score_long(test[["sku", "date", "y"]], pred, train[["sku", "date", "y"]]))
    out["wall_seconds"] = round(time.perf_counter() - t_start, 2)
    out["rss_after_load_mb"] = round(base_rss, 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    out["versions"] = versions("mlforecast", "statsforecast", "lightgbm", "pandas", "numpy")
    return out


def case_frame(data: Path, trees: int, threads: int, rolling: str = ROLLING) -> dict[str, Any]:
    """mlforecast + LightGBM on a prepared long frame (sku, date, y, price, category, store)."""
    t_start = time.perf_counter()
    frame = pd.read_parquet(data)
    frame["sku"] = frame["sku"].astype(object)
    train, test = split(frame)
    # Score the series that are live at the cut-off: ended ones have nothing to forecast, ones
    # launched after it have no history (both are kept for training).
    live = train.loc[train["date"] == train["date"].max(), "sku"].unique()
    test = test[test["y"].notna() & test["sku"].isin(live)]
    base_rss = rss_mb()
    t0 = time.perf_counter()
    # Series that ended before the test window have nothing to forecast and are kept for training.
    pred, stats = mlforecast_run(train, test, trees, threads, rolling)
    method_seconds = time.perf_counter() - t0
    scored_train = train[train["sku"].isin(test["sku"].unique())]
    return {
        "case": "frame/mlforecast",
        "method": "mlforecast",
        "data": str(data),
        "series": int(frame["sku"].nunique()),
        "rows": len(frame),
        "trees": trees,
        "rolling": rolling,
        **stats,
        "method_seconds": round(method_seconds, 2),
        **score_long(test[["sku", "date", "y"]], pred, scored_train[["sku", "date", "y"]]),
        "wall_seconds": round(time.perf_counter() - t_start, 2),
        "rss_after_load_mb": round(base_rss, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "versions": versions("mlforecast", "lightgbm", "pandas", "numpy"),
    }


def case_heldout(
    data: Path, out: Path, methods: list[str], trees: int, threads: int, rolling: str = ROLLING
) -> dict[str, Any]:
    """Peers on a held-out frame written by bench/accuracy.py; their forecasts go to ``out``.

    ``data`` holds sku, date, y, price, category, store and ``scored`` (bool per row): y is NaN
    after the cut-off (the held-out days, whose price is the one known at the cut-off). Every
    SKU trains mlforecast's global model; the scored SKUs are forecast (AutoETS fits only them).
    ``out`` gets method, sku, date, yhat, lo, hi (lo/hi: AutoETS's 80% band, else NaN).
    """
    frame = pd.read_parquet(data)
    frame["sku"] = frame["sku"].astype(object)
    held = frame["y"].isna()
    train = frame[~held].reset_index(drop=True)
    test = frame[held & frame["scored"]].reset_index(drop=True)
    horizon = int(test["date"].nunique())
    parts, seconds = [], {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "ets":
            scored_train = train[train["sku"].isin(test["sku"].unique())]
            pred, band = auto_ets(scored_train, horizon, threads)
            pred = pred.merge(band, on=["sku", "date"], how="left")
        elif method == "mlforecast":
            pred, _ = mlforecast_run(train, test, trees, threads, rolling)
            pred = pred.assign(lo=np.nan, hi=np.nan)
        else:
            raise SystemExit(f"unknown peer method {method!r}")
        seconds[method] = round(time.perf_counter() - t0, 2)
        parts.append(pred.assign(method=method))
    result = pd.concat(parts, ignore_index=True)
    result["sku"] = result["sku"].astype(str)
    result[["method", "sku", "date", "yhat", "lo", "hi"]].to_parquet(out, index=False)
    return {
        "case": "heldout",
        "methods": methods,
        "fit_seconds": seconds,
        "rows": len(result),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "versions": versions("mlforecast", "statsforecast", "lightgbm", "pandas", "numpy"),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the case and print its JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["m5", "frame", "heldout"])
    parser.add_argument("method", nargs="?", default="mlforecast")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path, help="heldout: where the forecasts go")
    parser.add_argument("--methods", default="ets,mlforecast", help="heldout: peer methods")
    parser.add_argument("--trees", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rolling", default=ROLLING, help="rolling means as lag:window,...")
    parser.add_argument(
        "--backtest-folds", type=int, default=0, help="m5 mlforecast: also cross-validate"
    )
    args = parser.parse_args(argv)
    if args.case == "heldout":
        if args.data is None or args.out is None:
            parser.error("heldout needs --data and --out")
        methods = [m for m in args.methods.split(",") if m]
        emit(case_heldout(args.data, args.out, methods, args.trees, args.threads, args.rolling))
    elif args.case == "m5":
        emit(case_m5(args.method, args.trees, args.threads, args.rolling, args.backtest_folds))
    else:
        if args.data is None:
            parser.error("frame needs --data")
        emit(case_frame(args.data, args.trees, args.threads, args.rolling))


if __name__ == "__main__":
    main()
