"""Tracing on or off, from the settings: the one place that may import the OpenTelemetry SDK."""

from __future__ import annotations

import logging

from orchestrator.logs import mask_url
from orchestrator.tracing.facade import Tracing
from orchestrator.tracing.settings import TracingSettings

logger = logging.getLogger(__name__)


def build(section: TracingSettings) -> Tracing:
    """The real tracing when an OTLP endpoint is configured and the `otel` extra is installed; else the no-op.

    Off costs nothing: no SDK import, no provider, no exporter thread.
    """
    endpoint = section.traces_endpoint()
    if endpoint is None:
        return Tracing()
    try:
        from orchestrator.tracing.otel import OtelTracing
    except ImportError as e:
        # A deployment that sets OTEL_* for other services must still start: say why, and run untraced.
        logger.warning("tracing: off: OTEL_* variables are set but the otel extra is not installed (%s)", e)
        return Tracing()
    logger.info("tracing: on, spans to %s", mask_url(endpoint))
    return OtelTracing(endpoint, section.otel_service_name)
