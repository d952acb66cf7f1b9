"""The M5 competition layout (one row per item, store and day) as the store's entities.

``m5_frames`` only reshapes; featurestore.ingest.import_m5 loads the frames through the same
validation and transaction as any other source. A SKU is an item in a store
(``HOBBIES_1_330_CA_1``); its region is the store's state (``US-CA``). Prices are weekly in M5:
one price row per SKU and change, valid from the first day of the Walmart week (wm_yr_wk) in
which the price changed; weeks without a price (not on sale) are skipped. Events come from
event_name/type 1 and 2 (region ``US``, kind = the lower-cased type); SNAP days become events
named ``SNAP`` of kind ``snap`` in the state's region.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

__all__ = ["M5_COLUMNS", "m5_frames"]

M5_COLUMNS = (
    "item_id",
    "dept_id",
    "cat_id",
    "store_id",
    "state_id",
    "value",
    "date",
    "wm_yr_wk",
    "event_name_1",
    "event_type_1",
    "event_name_2",
    "event_type_2",
    "snap",
    "sell_price",
)
SNAP_NAME = "SNAP"
SNAP_KIND = "snap"
EVENT_REGION = "US"


def m5_frames(path: Path) -> dict[str, pd.DataFrame]:
    """Products, events, prices and sales frames (entity columns), in the order to load them."""
    raw = pq.read_table(path, columns=list(M5_COLUMNS)).to_pandas(date_as_object=False)
    raw["date"] = pd.to_datetime(raw["date"]).astype("datetime64[s]")
    raw["sku"] = raw["item_id"].astype("str") + "_" + raw["store_id"].astype("str")
    raw["region"] = "US-" + raw["state_id"].astype("str")
    return {
        "products": _products(raw),
        "events": _events(raw),
        "prices": _prices(raw),
        "sales": _sales(raw),
    }


def _products(raw: pd.DataFrame) -> pd.DataFrame:
    first = raw.drop_duplicates("sku").sort_values("sku")
    return pd.DataFrame(
        {
            "sku": first["sku"].to_numpy(),
            "item_id": first["item_id"].to_numpy(),
            "department": first["dept_id"].to_numpy(),
            "category": first["cat_id"].to_numpy(),
            "store": first["store_id"].to_numpy(),
            "region": first["region"].to_numpy(),
        }
    )


def _events(raw: pd.DataFrame) -> pd.DataFrame:
    parts = []
    for n in (1, 2):
        named = raw[["date", f"event_name_{n}", f"event_type_{n}"]].drop_duplicates()
        named.columns = pd.Index(["date", "name", "kind"])
        named = named[named["name"].fillna("").str.strip() != ""]
        parts.append(named.assign(kind=named["kind"].str.strip().str.lower(), region=EVENT_REGION))
    snap = raw.loc[raw["snap"] == 1, ["date", "region"]].drop_duplicates()
    parts.append(snap.assign(name=SNAP_NAME, kind=SNAP_KIND))
    events = pd.concat(parts, ignore_index=True)[["date", "name", "kind", "region"]]
    events["name"] = events["name"].str.strip()
    events = events.drop_duplicates(["date", "name", "region"])
    return events.sort_values(["date", "region", "name"], ignore_index=True)


def _prices(raw: pd.DataFrame) -> pd.DataFrame:
    week_start = raw.groupby("wm_yr_wk")["date"].min()
    weekly = (
        raw.loc[raw["sell_price"].notna(), ["sku", "wm_yr_wk", "sell_price"]]
        .drop_duplicates(["sku", "wm_yr_wk"])
        .sort_values(["sku", "wm_yr_wk"], ignore_index=True)
    )
    price = weekly["sell_price"].to_numpy()
    sku = weekly["sku"].to_numpy()
    changed = np.ones(len(weekly), dtype=bool)
    changed[1:] = (sku[1:] != sku[:-1]) | (price[1:] != price[:-1])
    kept = weekly.loc[changed]
    return pd.DataFrame(
        {
            "sku": kept["sku"].to_numpy(),
            "valid_from": week_start.loc[kept["wm_yr_wk"]].to_numpy(),
            "price": kept["sell_price"].to_numpy(),
        }
    )


def _sales(raw: pd.DataFrame) -> pd.DataFrame:
    ordered = raw.sort_values(["sku", "date"], ignore_index=True)
    return pd.DataFrame(
        {
            "sku": ordered["sku"],
            "date": ordered["date"],
            "units": ordered["value"].astype("float64"),
            "avg_price": ordered["sell_price"].astype("float64"),
        }
    )
