#!/bin/sh
# The compose stack's one-shot `init` service, the steps of `make run`: migrate, fill the store,
# train a first champion. The API and the nightly job start only once it has succeeded, so a
# fresh `docker compose up` ends serving forecasts instead of answering /readyz 503.
#
# Usage: init.sh [EXPORTS_DIR]
# Exports found there (m5.parquet, or <entity>.parquet|.csv) are loaded in dependency order;
# loading a file again changes nothing, so a run after a failed one completes the load. With no
# exports, an empty store gets the demo catalogue.
set -eu

exports="${1:-}"

salesfc db upgrade

loaded=0
if [ -n "$exports" ] && [ -d "$exports" ]; then
    # The order of app/cli/nightly.py's LOAD_ORDER (a test checks that they agree).
    for entity in m5 products orders sales prices promotions events; do
        for suffix in parquet csv; do
            file="$exports/$entity.$suffix"
            if [ -f "$file" ]; then
                salesfc ingest "$entity" "$file"
                loaded=1
            fi
        done
    done
fi
if [ "$loaded" = 0 ]; then
    salesfc demo-data --if-empty
fi

# One fold, as `make run`: the first champion is ready in minutes; `salesfc train` or
# POST /v1/retrain later backtests more folds and promotes a better bundle through the gate.
salesfc train --if-no-champion --folds 1
