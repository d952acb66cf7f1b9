# One Makefile for set-up, running, testing and checking. Every target bootstraps .venv itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run serve test check lint format bench soak lock clean browser screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: migrate the embedded SQLite store, load the demo catalogue if empty, train a first
## bundle if there is none, then serve on 127.0.0.1:8000 (OpenAPI docs at /docs)
run: $(STAMP)
	$(BIN)/salesfc db upgrade
	$(BIN)/salesfc demo-data --if-empty
	$(BIN)/salesfc db stats
	$(BIN)/salesfc train --if-no-champion --folds 1
	$(BIN)/salesfc serve

## test: the whole suite (SQLite always; PostgreSQL too, required when CI=true)
test: $(STAMP) browser
	$(BIN)/python -m pytest

# The dashboard's browser tests drive Debian's Chromium through Playwright, which downloads
# no browser of its own (nothing outside the package registries).
CHROMIUM ?= /usr/bin/chromium
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

## browser: install Debian's chromium when $(CHROMIUM) is missing (root, or sudo)
browser:
	@test -x $(CHROMIUM) || { \
		SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; \
	}

## screenshots: the README's dashboard screenshots (docs/img/), taken by the browser tests
screenshots: $(STAMP) browser
	SALESFC_SCREENSHOT_DIR=docs/img $(BIN)/python -m pytest -q -p no:cacheprovider tests/app/test_dashboard.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## check: format, lint, types and tests
check: lint test

## bench: benchmarks (results go to docs/benchmarks.md); peers run in .venv-peers (pandas < 3)
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet 'mlforecast==1.1.0' 'statsforecast==2.1.1' 'lightgbm==4.7.0' psutil pyarrow
	$(BIN)/python bench/ingest.py
	SALESFC_PEER_PYTHON=.venv-peers/bin/python $(BIN)/python bench/train.py
	SALESFC_PEER_PYTHON=.venv-peers/bin/python $(BIN)/python bench/accuracy.py --write
	$(BIN)/python bench/serve.py

## soak: 10 minutes of mixed traffic at ~80% of the peak, 2 workers (docs/benchmarks.md, Soak)
soak: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python bench/soak.py --minutes 10

# pip-tools in a venv of its own inside .venv: the lock tool never changes what it pins.
LOCKTOOLS := $(VENV)/pip-tools

## lock: pin the image's runtime dependencies, with hashes, to the versions .venv has
## (requirements.lock; after changing pyproject's dependencies: make install, then make lock)
lock: $(STAMP)
	test -x $(LOCKTOOLS)/bin/pip-compile || ($(PYTHON) -m venv $(LOCKTOOLS) \
		&& $(LOCKTOOLS)/bin/python -m pip install --quiet 'pip-tools>=7.4,<8')
	$(BIN)/python -m pip freeze --exclude-editable > $(LOCKTOOLS)/constraints.txt
	$(LOCKTOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --all-build-deps \
		--strip-extras --no-emit-index-url --no-emit-find-links \
		--constraint $(LOCKTOOLS)/constraints.txt --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
