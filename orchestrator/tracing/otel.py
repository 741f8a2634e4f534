"""Tracing on: the OpenTelemetry SDK, a batch processor and the OTLP/HTTP exporter.

Imported only by build.py, only when the settings switch tracing on (the SDK and the exporter cost
about 60 ms of imports and a thread). No global provider is installed: the orchestrator's spans go
to its own provider, so a host application's own OpenTelemetry set-up is left as it was; the
current span (a caller's own, or ours) is still found through the context API, which is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode

from orchestrator.logs import add_record_fields
from orchestrator.tracing.facade import AttributeValue, Carrier, Span, SpanKind, Tracing
from orchestrator.version import __version__

logger = logging.getLogger(__name__)

_KINDS: dict[SpanKind, trace.SpanKind] = {
    "internal": trace.SpanKind.INTERNAL,
    "producer": trace.SpanKind.PRODUCER,
    "consumer": trace.SpanKind.CONSUMER,
    "client": trace.SpanKind.CLIENT,
}


class OtelSpan(Span):
    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def carrier(self) -> Carrier | None:
        if not self._span.get_span_context().is_valid:
            return None
        carrier: Carrier = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def set(self, key: str, value: AttributeValue | None) -> None:
        if value is not None:
            self._span.set_attribute(key, value)

    def fail(self, message: str | None) -> None:
        self._span.set_status(Status(StatusCode.ERROR, message))


class OtelTracing(Tracing):
    """Spans exported in batches to `endpoint` (OTLP/HTTP protobuf).

    Args:
        endpoint: the traces URL (`.../v1/traces`).
        service_name: OTEL_SERVICE_NAME when set; else `orchestrator`.
    """

    def __init__(self, endpoint: str, service_name: str | None) -> None:
        super().__init__()
        # Resource.create reads OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; ours only fills a gap.
        resource = Resource.create({} if service_name else {SERVICE_NAME: "orchestrator"})
        # The sampler comes from OTEL_TRACES_SAMPLER (default: parentbased_always_on).
        self.provider = TracerProvider(resource=resource)
        self.exporter = OTLPSpanExporter(endpoint=endpoint)
        # The batch processor's own thread does the HTTP posts; ending a span only queues it.
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self._tracer = self.provider.get_tracer("orchestrator", __version__)
        self._remove_log_fields = add_record_fields(self.current_ids)

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        root: bool = False,
        links: Sequence[Mapping[str, str] | None] = (),
        attributes: Mapping[str, AttributeValue | None] | None = None,
        kind: SpanKind = "internal",
    ) -> Iterator[Span]:
        context: Context | None = Context() if root else propagate.extract(parent) if parent else None
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=_KINDS[kind],
            links=[link for c in links if c and (link := _link(c)) is not None],
            attributes={k: v for k, v in (attributes or {}).items() if v is not None},
        ) as span:
            yield OtelSpan(span)

    def current_ids(self) -> dict[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return None
        return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}

    async def aclose(self) -> None:
        self._remove_log_fields()
        # shutdown() flushes with a blocking HTTP post: off the loop.
        await asyncio.to_thread(self.provider.shutdown)


def _link(carrier: Mapping[str, str]) -> Link | None:
    context = trace.get_current_span(propagate.extract(carrier)).get_span_context()
    return Link(context) if context.is_valid else None
