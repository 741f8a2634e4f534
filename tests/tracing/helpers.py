"""A plugin that reports the trace context it was given and, when asked, opens its own span with the
OpenTelemetry SDK (taken from the test venv by path: plugins without dependencies run with `-I -S`)."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path
from typing import Any

TRACED_MAIN = """
import json, os, sys

def run(record=None, fail_first=None, endpoint=None, otel_site=None, **ctx):
    carrier = {k: os.environ[k.upper()] for k in ("traceparent", "tracestate") if k.upper() in os.environ}
    if record:
        with open(record, "a") as fh:
            fh.write(json.dumps({"job": ctx["job_id"], "attempt": ctx["attempt"], **carrier}) + "\\n")
    if endpoint:
        sys.path.append(otel_site)
        from opentelemetry import propagate
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": "traced-plugin"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        with provider.get_tracer("traced").start_as_current_span("plugin.work", context=propagate.extract(carrier)):
            pass
        provider.shutdown()
    if fail_first and ctx["attempt"] == 1:
        raise RuntimeError("the first attempt fails")
    return carrier
"""

TRACED_PARAMS = {
    name: {"type": "string", "required": False} for name in ("record", "fail_first", "endpoint", "otel_site")
}


def make_traced_plugin(plugins_dir: Path, name: str = "traced", **manifest_extra: Any) -> Path:
    folder = plugins_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": name,
        "version": "1.0.0",
        "description": "reports its trace context",
        "author": "tests",
        "entry_point": "main.run",
        "parameters": TRACED_PARAMS,
        **manifest_extra,
    }
    (folder / "plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(TRACED_MAIN)
    return folder


def otel_site() -> str:
    """Where the test venv's packages (the OpenTelemetry SDK among them) are installed."""
    return sysconfig.get_paths()["purelib"]


def otel_env(endpoint: str) -> dict[str, str]:
    """The standard variables that switch tracing on for a `run` or CLI child; a short batch delay."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "orch-test", "OTEL_BSP_SCHEDULE_DELAY": "100"}
