"""Where training and batch forecasting run: in this process (``local``) or on a Dask cluster.

``runner.LocalRunner`` holds the whole history in memory (one machine); ``dask_runner.DaskRunner``
keeps it on the workers, one SKU range each, read there straight from the feature store. Both
answer the same questions (``runner.HistoryRunner``), so ``training.pipeline.train`` is one code
path for both. Only ``dask_*`` modules and ``cluster`` import Dask, and only when used.
"""

from __future__ import annotations

ENGINES = ("local", "dask")
