"""What the rest of the orchestrator sees of tracing: `Tracing.span(...)`, here as the no-op it is when off.

No OpenTelemetry import here: with tracing off (or the extra not installed) a span costs one call
returning a shared, reusable null context manager, and nothing else happens. otel.py overrides
`span` with the real thing.

A trace context crosses processes (caller -> Redis -> worker -> plugin child) as a W3C carrier:
`{"traceparent": "00-<trace id>-<span id>-<flags>", "tracestate": ...}`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

Carrier = dict[str, str]
SpanKind = Literal["internal", "producer", "consumer", "client"]
AttributeValue = str | int | float | bool


class Span:
    """One open span (the no-op one: every method does nothing)."""

    @property
    def carrier(self) -> Carrier | None:
        """This span's context for another process (None when not recorded/off)."""
        return None

    def set(self, key: str, value: AttributeValue | None) -> None:
        """Add an attribute (None values are left out)."""

    def fail(self, message: str | None) -> None:
        """Mark the span as an error."""


_NOOP_SPAN = Span()


class Tracing:
    """The facade components are given; this base class is tracing off."""

    def __init__(self) -> None:
        self._noop: contextlib.nullcontext[Span] = contextlib.nullcontext(_NOOP_SPAN)

    def span(
        self,
        name: str,
        *,
        parent: Mapping[str, str] | None = None,
        root: bool = False,
        links: Sequence[Mapping[str, str] | None] = (),
        attributes: Mapping[str, AttributeValue | None] | None = None,
        kind: SpanKind = "internal",
    ) -> contextlib.AbstractContextManager[Span]:
        """Open a span for the `with` block, made current inside it.

        Args:
            name: the span's name (`trigger`, `job`, `plugin`, `cdc.change`, ...).
            parent: a carrier from another process to continue; default: the current span, if any.
            root: start a new trace whatever is current (sources that act on their own).
            links: carriers of related spans (a retry's first attempt, the changes a bulk carries).
            attributes: set at start (None values are left out).
            kind: the OpenTelemetry span kind.
        """
        return self._noop

    def current_ids(self) -> dict[str, str] | None:
        """`{"trace_id", "span_id"}` of the current span (for log lines), or None."""
        return None

    async def aclose(self) -> None:
        """Flush what is buffered and stop exporting (no-op when off)."""


def trace_id_of(carrier: Mapping[str, Any] | None) -> str | None:
    """The trace id in a W3C carrier (the job page shows it), without any OpenTelemetry import."""
    parent = carrier.get("traceparent") if carrier else None
    parts = parent.split("-") if isinstance(parent, str) else []
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
