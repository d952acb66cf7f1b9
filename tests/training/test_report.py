"""The HTML report: sections, embedded PNGs, SKU choice, calibration and importance arithmetic."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sqlalchemy import create_engine

from featurestore.schema import HISTORY_COLUMNS, PRODUCT_COLUMNS
from training import coldstart, pipeline
from training.bundle import Bundle, Manifest, load_bundle
from training.forecaster import Forecaster
from training.metrics import evaluate, value_added
from training.quantiles import QuantileCalibrator
from training.report import (
    SECTIONS,
    ReportError,
    build_report,
    calibration_curve,
    feature_importance,
    pick_skus,
    write_report,
)
from training.synth import SynthConfig, generate

CHAMPION = "lgbm_tweedie/multi"
PNG_RE = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _pngs(text: str) -> list[Image.Image]:
    images: list[Image.Image] = []
    for data in PNG_RE.findall(text):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(b"\x89PNG\r\n\x1a\n")
        image = Image.open(io.BytesIO(raw))
        image.load()
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 200
        images.append(image)
    return images


def _assert_self_contained(text: str) -> None:
    assert not re.search(r"https?://", text)
    assert "<script" not in text.lower() and "<link" not in text.lower()
    for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert ref.startswith(("data:image/png;base64,", "#")), ref


@dataclass
class _Importance:
    shares: dict[str, float] | None

    def feature_importance(self) -> dict[str, float] | None:
        return self.shares


def _handmade_bundle(
    tmp_path: Path,
    *,
    n_skus: int = 12,
    horizon: int = 7,
    calibrated: bool = True,
    stages: list[dict[str, float] | None] | None = None,
    champion: str = CHAMPION,
) -> Bundle:
    """A bundle shaped like training.pipeline.train's, from simulated backtest rows."""
    rng = np.random.default_rng(3)
    skus = [f"SKU_{i:02d}" for i in range(n_skus)]
    level = pd.Series(np.exp(rng.normal(0.5, 1.0, n_skus)), index=skus)
    category = pd.Series([("FOODS", "HOBBIES", "GARDEN")[i % 3] for i in range(n_skus)], skus)
    store = pd.Series([("CA_1", "TX_1")[i % 2] for i in range(n_skus)], skus)
    days = pd.date_range("2025-01-01", periods=120, freq="D")
    history = pd.DataFrame(
        {
            "sku": np.repeat(skus, len(days)),
            "date": np.tile(days, n_skus),
            "units": rng.poisson(np.repeat(level.to_numpy(), len(days))).astype(np.float64),
        }
    )
    cuts = [days[-1] + pd.Timedelta(days=1), days[-1] + pd.Timedelta(days=1 + horizon)]
    parts = []
    for fold, cut in enumerate(cuts):
        dates = pd.date_range(cut + pd.Timedelta(days=1), periods=horizon, freq="D")
        n = n_skus * horizon
        base = pd.DataFrame(
            {
                "fold": fold,
                "cutoff": cut,
                "sku": np.repeat(skus, horizon),
                "date": np.tile(dates, n_skus),
                "horizon": np.tile(np.arange(1, horizon + 1), n_skus).astype(np.int16),
            }
        )
        lam = level.reindex(base["sku"]).to_numpy()
        base["y"] = rng.poisson(lam).astype(np.float64)
        champ = base.assign(model=champion, yhat=lam * np.exp(rng.normal(0, 0.2, n)))
        naive = base.assign(model="seasonal_naive", yhat=rng.poisson(lam).astype(np.float64))
        parts += [champ, naive]
    backtest = pd.concat(parts, ignore_index=True)
    backtest["category"] = category.reindex(backtest["sku"]).to_numpy()
    backtest["store"] = store.reindex(backtest["sku"]).to_numpy()
    reports = {
        name: evaluate(rows, train_history=history)
        for name, rows in backtest.groupby("model", sort=False)
    }
    comparison = [
        {"model": name, **{k: r["overall"][k] for k in ("rmsse", "wape", "mase", "rmse", "mae")}}
        | {"bias": r["overall"]["bias"], "fit_seconds": 1.5}
        for name, r in reports.items()
    ]
    champ_report = reports[champion]
    metrics: dict[str, Any] = {
        "selection_metric": "rmsse",
        "selection_score": champ_report["overall"]["rmsse"],
        "champion_model": champion,
        "overall": champ_report["overall"],
        "by_segment": champ_report["by_segment"],
        # Through JSON, horizon keys become strings: the report must cope.
        "by_horizon": {str(h): v for h, v in champ_report["by_horizon"].items()},
        "seasonal_naive": reports["seasonal_naive"]["overall"],
        "value_added_over_seasonal_naive": value_added(
            champ_report["overall"], reports["seasonal_naive"]["overall"]
        ),
        "comparison": comparison,
        "cutoffs": [c.date().isoformat() for c in cuts],
        "quantile_coverage": {
            "quantiles": [0.1, 0.5, 0.9],
            "share_at_or_below": {"0.1": 0.2, "0.5": 0.55, "0.9": 0.9},
            "interval": [0.1, 0.9],
            "interval_coverage": 0.79,
            "nominal_interval_coverage": 0.8,
            "rows": 84,
        },
        "cold_start": {"skus": 2, "wape": 0.61, "bias": -0.05, "rmsse": 0.93},
        "train_seconds": 12.5,
    }
    champ_rows = backtest[backtest["model"] == champion]
    artifacts: dict[str, Any] = {
        "backtest": backtest,
        "model": SimpleNamespace(
            stages_=[
                SimpleNamespace(estimator=_Importance(s))
                for s in (stages if stages is not None else [{"lag_7": 0.6, "price": 0.4}])
            ]
        ),
    }
    if calibrated:
        artifacts["calibration"] = QuantileCalibrator().fit(
            champ_rows["y"].to_numpy(),
            champ_rows["yhat"].to_numpy(),
            champ_rows["horizon"].to_numpy(),
        )
    manifest = Manifest(
        version="20250601T000000Z-abcd",
        created_at="2025-06-01T00:00:00+00:00",
        git_sha=None,
        data_start="2025-01-01",
        data_end=str(backtest["date"].max().date()),
        cutoff=str(backtest["date"].max().date()),
        sku_count=n_skus,
        features=["lag_7", "price"],
        strategy={"name": "multi", "horizon": horizon},
        params={"model": champion.split("/")[0]},
        metrics=metrics,
        libraries={"pandas": pd.__version__},
        artifacts={},
    )
    return Bundle(manifest=manifest, artifacts=artifacts, path=tmp_path / manifest.version)


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, str]:
    """One hand-made bundle and its report, shared because rendering takes a few seconds."""
    bundle = _handmade_bundle(tmp_path_factory.mktemp("bundle"))
    return bundle, build_report(bundle)


def test_report_has_every_section_and_seven_decodable_plots(handmade: tuple[Bundle, str]) -> None:
    bundle, text = handmade
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    for sid, title in SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in text
    # top SKUs, worst SKUs, horizon, segments, calibration, inventory, importance
    assert len(_pngs(text)) == 7
    for row in bundle.manifest.metrics["comparison"]:
        assert f"<td>{row['model']}</td>" in text
    assert '<tr class="champion"><td>lgbm_tweedie/multi</td>' in text
    assert bundle.version in text
    _assert_self_contained(text)


def test_report_shows_the_top_volume_and_the_worst_skus(handmade: tuple[Bundle, str]) -> None:
    bundle, text = handmade
    rows = bundle.artifacts["backtest"]
    champ = rows[rows["model"] == CHAMPION]
    volume = champ.groupby("sku")["y"].sum().sort_values(ascending=False, kind="stable")
    top_table = text.split('<table id="top-skus">')[1].split("</table>")[0]
    worst_table = text.split('<table id="worst-skus">')[1].split("</table>")[0]
    assert re.findall(r"<tr><td>(SKU_\d+)</td>", top_table) == list(volume.index[:3])
    worst = re.findall(r"<tr><td>(SKU_\d+)</td>", worst_table)
    assert len(worst) == 3 and not set(worst) & set(volume.index[:3])


def test_pick_skus_skips_small_sellers_when_looking_for_the_worst() -> None:
    sales = {"big": (100, 110), "mid": (40, 80), "tiny": (1, 9), "ok": (50, 52), "low": (2, 2)}
    rows = pd.DataFrame(
        [{"model": "m", "sku": s, "y": y, "yhat": yhat} for s, (y, yhat) in sales.items()]
    )
    top, worst = pick_skus(rows, "m", n_top=1, n_worst=5)
    assert top == ["big"]
    # volume >= median (50) among sellers: "mid" (WAPE 1.0) then "ok" (0.04); "tiny" (WAPE 8)
    # sold too little to count.
    assert worst == ["mid", "ok"]


def test_chosen_skus_replace_the_top_volume_ones(tmp_path: Path) -> None:
    bundle = _handmade_bundle(tmp_path)
    text = build_report(bundle, skus=["SKU_05", "SKU_07"])
    assert "<h3>Chosen SKUs</h3>" in text
    chosen = text.split('<table id="top-skus">')[1].split("</table>")[0]
    assert re.findall(r"<tr><td>(SKU_\d+)</td>", chosen) == ["SKU_05", "SKU_07"]
    with pytest.raises(ReportError, match="NOPE"):
        build_report(bundle, skus=["SKU_05", "NOPE"])


class _FixedQuantiles:
    """A stand-in calibrator whose quantile q is 10 * q whatever the forecast."""

    def predict(self, yhat: np.ndarray, horizon: np.ndarray, quantiles: list[float]) -> np.ndarray:
        return np.tile(np.asarray(quantiles) * 10, (len(yhat), 1))


def test_calibration_curve_counts_ties_on_both_sides() -> None:
    rows = pd.DataFrame({"y": np.arange(10.0), "yhat": 1.0, "horizon": 1})
    curve = calibration_curve(_FixedQuantiles(), rows, [0.25, 0.5])  # type: ignore[arg-type]
    # P25 = 2.5: 3 of 10 actuals lie below it. P50 = 5: 5 below, 6 at or below.
    assert curve["below"].tolist() == [0.3, 0.5]
    assert curve["at_or_below"].tolist() == [0.3, 0.6]


def test_feature_importance_is_the_mean_share_over_stages() -> None:
    model = SimpleNamespace(
        stages_=[
            SimpleNamespace(estimator=_Importance({"a": 0.5, "b": 0.5})),
            SimpleNamespace(estimator=_Importance({"a": 1.0})),
            SimpleNamespace(estimator=_Importance(None)),
        ]
    )
    shares, n = feature_importance(model)
    assert n == 2
    assert shares.to_dict() == {"a": 0.75, "b": 0.25}
    assert feature_importance(SimpleNamespace(stages_=[]))[1] == 0


def test_report_without_calibrator_or_importance_says_so_and_escapes(tmp_path: Path) -> None:
    bundle = _handmade_bundle(tmp_path, calibrated=False, stages=[], champion="<b>evil</b>")
    text = build_report(bundle)
    assert "The bundle holds no quantile calibrator." in text
    assert "The champion model reports no feature importance." in text
    assert len(_pngs(text)) == 5  # the inventory replay needs no calibrator
    assert "P10-P90 band" not in text
    assert "<b>evil</b>" not in text
    assert '<tr class="champion"><td>&lt;b&gt;evil&lt;/b&gt;</td>' in text
    _assert_self_contained(text)


def test_write_report_writes_the_file(tmp_path: Path) -> None:
    bundle = _handmade_bundle(tmp_path)
    out = write_report(bundle, tmp_path / "reports" / "model.html")
    assert out == tmp_path / "reports" / "model.html"
    text = out.read_text(encoding="utf-8")
    assert len(_pngs(text)) == 7
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.html"]


def _synth_frames(n_skus: int, n_days: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical history and product frames from a synthetic catalogue, without a database."""
    cat = generate(SynthConfig(n_skus=n_skus, n_days=n_days, seed=11, end=dt.date(2025, 6, 30)))
    sales = cat.sales
    last = sales["date"].max()
    parts = []
    for sku, rows in sales.groupby("sku", sort=True):
        days = pd.date_range(rows["date"].min(), last, freq="D")
        day = rows.set_index("date").reindex(days)
        parts.append(
            pd.DataFrame(
                {
                    "sku": str(sku),
                    "date": days,
                    "units": day["units"].fillna(0).to_numpy(),
                    "price": day["avg_price"].ffill().to_numpy(),
                    "on_promotion": day["on_promotion"].fillna(False).to_numpy(),
                }
            )
        )
    dense = pd.concat(parts, ignore_index=True)
    history = pd.DataFrame({c: dense.get(c, 0) for c in HISTORY_COLUMNS}, index=dense.index).astype(
        HISTORY_COLUMNS
    )
    products = cat.products.assign(
        first_sale_date=cat.products["sku"].map(sales.groupby("sku")["date"].min()),
        last_sale_date=cat.products["sku"].map(sales.groupby("sku")["date"].max()),
    )[list(PRODUCT_COLUMNS)]
    return history, products.astype(PRODUCT_COLUMNS).sort_values("sku", ignore_index=True)


def test_report_of_a_trained_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history, products = _synth_frames(n_skus=16, n_days=150)
    monkeypatch.setattr(pipeline, "load_history", lambda engine, cutoff=None: (history, products))
    # Few trees on one thread: LightGBM's thread pool only spins on a shared 2-core machine.
    fast: dict[str, Any] = {"n_estimators": 20, "num_threads": 1}

    def small_cold_start(horizon: int, **_: Any) -> Forecaster:
        # Cold start is not under test here: a plain small direct model stands in for it.
        return Forecaster(
            model="lgbm_tweedie",
            strategy="direct",
            horizon=horizon,
            model_params=fast,
            min_rows_per_sku=0,
        )

    monkeypatch.setattr(coldstart, "cold_start_forecaster", small_cold_start)
    options = pipeline.TrainOptions(
        models=("seasonal_naive", "moving_average", "lgbm_tweedie"),
        horizon=7,
        folds=2,
        model_params={"lgbm_tweedie": fast},
    )
    models_dir = tmp_path / "models"
    outcome = pipeline.train(create_engine("sqlite://"), models_dir, options)
    bundle = load_bundle(outcome.path, models_dir=models_dir)

    text = write_report(bundle, tmp_path / "report.html").read_text(encoding="utf-8")
    for sid, title in SECTIONS:
        assert f'<section id="{sid}"><h2>{title}</h2>' in text
    # Seven figures; a champion without features (a baseline, or a composition with baseline
    # fallbacks, which the backtest may now ship) has no feature-importance figure.
    learned_alone = outcome.champion_model == "lgbm_tweedie/multi"
    assert len(_pngs(text)) == (7 if learned_alone else 6)
    comparison = bundle.manifest.metrics["comparison"]
    singles = {"seasonal_naive", "moving_average", "lgbm_tweedie/multi"}
    names = {row["model"] for row in comparison}
    assert singles <= names  # and the ensemble of the three (--ensemble-top)
    assert all(n.startswith("ensemble(") for n in names - singles)
    for row in comparison:
        assert f"<td>{row['model']}</td>" in text
    overall = bundle.manifest.metrics["overall"]
    assert f">{overall['wape'] * 100:.1f}%</div>" in text
    assert f"{bundle.manifest.data_start} .. {bundle.manifest.data_end}" in text
    _assert_self_contained(text)
