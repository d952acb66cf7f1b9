"""A realistic synthetic retail catalogue (demo data, tests, benchmarks), deterministic by seed.

The pieces: ``catalogue`` (products, SKU parameters), ``calendar`` (day effects,
events), ``pricing`` (prices, promotions), ``demand`` (daily units) and
``orders`` (order lines). Each block of SKUs has its own random stream, so a block's data
does not depend on how the output is consumed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pandas as pd
from sqlalchemy import Engine

from featurestore.calendar import sync_holidays
from featurestore.ingest import IngestReport, ingest_frames
from training.synth.calendar import all_days, calendar_effects, custom_events, weekly_profiles
from training.synth.catalogue import (
    BRANDS,
    CATALOGUE,
    CATEGORY_PRICE,
    CATEGORY_SEASON,
    CATEGORY_WEEK,
    CATEGORY_WEIGHTS,
    STORES,
    SynthConfig,
    sku_params,
)
from training.synth.demand import BLOCK_SKUS, Block, simulate_block
from training.synth.orders import iter_order_lines
from training.synth.pricing import (
    PROMO_COLUMNS,
    PROMO_DEPTH_P,
    PROMO_DEPTHS,
    PROMO_SLOT,
    category_promotions,
)
from training.synth.traits import TraitsExport, traits_config, traits_export

__all__ = [
    "BLOCK_SKUS",
    "BRANDS",
    "CATALOGUE",
    "CATEGORY_PRICE",
    "CATEGORY_SEASON",
    "CATEGORY_WEEK",
    "CATEGORY_WEIGHTS",
    "PROMO_COLUMNS",
    "PROMO_DEPTHS",
    "PROMO_DEPTH_P",
    "PROMO_SLOT",
    "STORES",
    "SynthCatalogue",
    "SynthConfig",
    "TraitsExport",
    "generate",
    "iter_order_lines",
    "iter_sales",
    "traits_config",
    "traits_export",
    "write_catalogue",
]


@dataclass
class SynthCatalogue:
    """Generated entities, with columns named as featurestore.schema.ENTITIES, ready to ingest."""

    products: pd.DataFrame
    sales: pd.DataFrame
    prices: pd.DataFrame
    promotions: pd.DataFrame
    events: pd.DataFrame
    config: SynthConfig = field(default_factory=SynthConfig)


def _blocks(cfg: SynthConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Iterator[Block]]:
    if cfg.n_skus < 1 or cfg.n_days < 1:
        raise ValueError("n_skus and n_days must be positive")
    params, products = sku_params(cfg)
    days = all_days(cfg)
    categories = sorted(set(params.category))
    calendar = calendar_effects(cfg, days, categories)
    weekly = weekly_profiles(cfg, categories)
    cat_masks, cat_promos = category_promotions(cfg, days, categories)

    def gen() -> Iterator[Block]:
        for lo in range(0, cfg.n_skus, BLOCK_SKUS):
            hi = min(lo + BLOCK_SKUS, cfg.n_skus)
            yield simulate_block(cfg, params, lo, hi, days, calendar, weekly, cat_masks)

    return products, custom_events(days), cat_promos, gen()


def generate(config: SynthConfig | None = None) -> SynthCatalogue:
    """Generate a whole catalogue in memory (deterministic for a given config)."""
    cfg = config or SynthConfig()
    products, events, cat_promos, blocks = _blocks(cfg)
    parts = list(blocks)
    promotions = pd.concat([cat_promos, *(b.promotions for b in parts)], ignore_index=True)
    return SynthCatalogue(
        products=products,
        sales=pd.concat([b.sales for b in parts], ignore_index=True),
        prices=pd.concat([b.prices for b in parts], ignore_index=True),
        promotions=promotions,
        events=events,
        config=cfg,
    )


def iter_sales(config: SynthConfig) -> Iterator[pd.DataFrame]:
    """Daily sales block by block (512 SKUs each), for loads larger than memory."""
    _products, _events, _promos, blocks = _blocks(config)
    for block in blocks:
        yield block.sales


def write_catalogue(
    engine: Engine,
    cat: SynthCatalogue,
    progress: Callable[[str, IngestReport], None] | None = None,
    *,
    chunk_rows: int = 200_000,
) -> dict[str, IngestReport]:
    """Load a catalogue through the ordinary ingestion path, then sync public holidays."""
    source = f"synth:seed={cat.config.seed}:skus={cat.config.n_skus}:days={cat.config.n_days}"
    reports: dict[str, IngestReport] = {}
    for entity in ("products", "events", "prices", "promotions", "sales"):
        frame: pd.DataFrame = getattr(cat, entity)
        chunks = (frame.iloc[i : i + chunk_rows] for i in range(0, max(len(frame), 1), chunk_rows))
        report = ingest_frames(engine, entity, chunks, source=f"{source}:{entity}")
        reports[entity] = report
        if progress is not None:
            progress(entity, report)
    # the regions' public holidays over the sales window and a year beyond it
    sync_holidays(engine)
    return reports
