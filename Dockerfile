# salesfc image (API, init and nightly job): slim, non-root, with a healthcheck; installs from
# requirements.lock. Same commands as the Makefile.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SALESFC_HOST=0.0.0.0 \
    SALESFC_PORT=8000 \
    SALESFC_MODELS_DIR=/var/lib/salesfc/models \
    SALESFC_DATA_DIR=/var/lib/salesfc/data

# libgomp1: LightGBM's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/salesfc
# Dependencies first, from the lock (exact versions, sha256 checked; `make lock` refreshes it):
# a rebuilt image has the libraries its bundles were pickled with, so it still loads them, and
# this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY featurestore ./featurestore
COPY training ./training
COPY app ./app
COPY docker ./docker
# The project alone: its dependencies and its build backend (setuptools) came from the lock.
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --system --uid 10001 --home-dir /var/lib/salesfc --create-home salesfc \
    && mkdir -p /var/lib/salesfc/models /var/lib/salesfc/data \
    && chown -R salesfc:salesfc /var/lib/salesfc

USER salesfc
EXPOSE 8000
VOLUME ["/var/lib/salesfc"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"

CMD ["salesfc", "serve"]
