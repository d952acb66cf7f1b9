# salesfc API image: slim, non-root, with a healthcheck. Same commands as the Makefile.
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
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY featurestore ./featurestore
COPY training ./training
COPY app ./app
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /var/lib/salesfc --create-home salesfc \
    && mkdir -p /var/lib/salesfc/models /var/lib/salesfc/data \
    && chown -R salesfc:salesfc /var/lib/salesfc

USER salesfc
EXPOSE 8000
VOLUME ["/var/lib/salesfc"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"

CMD ["salesfc", "serve"]
