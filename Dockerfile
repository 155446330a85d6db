# syntax=docker/dockerfile:1
# churn-mlops images, one target each (docker build --target NAME .):
#   serving  `churn serve` on the main dependencies only (no MLflow, scikit-learn, Optuna, ...)
#   jobs     training, monitoring, batch scoring, the feature store and the loop
#            (adds the jobs, features and compiled extras)
#   spark    jobs plus the spark extra and a Java 17 runtime, for `churn batch score --engine spark`
# Every target installs exactly what uv.lock pins (`uv sync --locked`) into /opt/venv and runs
# as the unprivileged user 10001:10001 with all state under CHURN_HOME=/var/lib/churn.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

# ---- builders: the dependencies first (cached until uv.lock changes), then the project ----
FROM ${PYTHON_IMAGE} AS build-base
COPY --from=uv /uv /uvx /bin/
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=0 \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /build

FROM build-base AS build-serving
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-install-project --no-editable
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

FROM build-base AS build-jobs
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-install-project --no-editable --extra jobs --extra features --extra compiled
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --extra jobs --extra features --extra compiled

FROM build-base AS build-spark
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev --no-install-project --no-editable --extra jobs --extra features --extra compiled --extra spark
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --extra jobs --extra features --extra compiled --extra spark

# ---- runtime: no uv, no compilers; the virtual environment is copied in, owned by root ----
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 churn \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/churn --no-create-home \
        --shell /usr/sbin/nologin churn \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/churn /srv/churn /srv/churn/mlruns
# OMP_WAIT_POLICY: idle LightGBM threads sleep instead of spinning on a shared machine.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    CHURN_HOME=/var/lib/churn
# /srv/churn is the working directory: MLflow's client puts a new experiment's artifacts under
# ./mlruns, so mounting one shared volume at /srv/churn/mlruns gives every container the same paths.
WORKDIR /srv/churn
VOLUME ["/var/lib/churn"]
USER 10001:10001
ENTRYPOINT ["churn"]

FROM runtime AS serving
COPY --from=build-serving /opt/venv /opt/venv
# Each worker scores a request's few rows on one thread; more OpenMP threads only add wake-ups.
ENV OMP_NUM_THREADS=1
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS jobs
USER 0:0
# ld (binutils) links the trees batch scoring compiles with LLVM into a small shared library;
# without it they are loaded through llvmlite, which takes about 50 MB more memory.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build-jobs /opt/venv /opt/venv
CMD ["loop", "run"]

FROM runtime AS spark
USER 0:0
# Debian's security updates replace package versions, so pinning one breaks later builds;
# the base image tag pins the release (bookworm, whose Java 17 Spark 4 supports).
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless binutils \
    && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build-spark /opt/venv /opt/venv
CMD ["batch", "score", "--help"]
