"""OpenTelemetry spans for an enqueue and for each try, with the optional `otel` extra.

An enqueue is a PRODUCER span `send <pool>`, each try a CONSUMER span `process <pool>`: a
child of the enqueue's context and linked to it, as the messaging conventions say for a
span that processes one message. The enqueue's context is what the job stores as its
`traceparent`, so a try continues the trace of the request that made the job.

Without opentelemetry-api installed nothing here imports it and every call does nothing
but pass the W3C context on (`jobs.tracing`). With it, spans go to whatever tracer
provider the process has; the service's own processes set one up from the standard
variables when `OTEL_TRACES_EXPORTER` (otlp or console) or an OTLP endpoint is set.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jobs import tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

SYSTEM = "mq"
# a top-level lookup imports nothing
INSTALLED = importlib.util.find_spec("opentelemetry") is not None

_provider: Any = None


def configure(role: str) -> None:
    """Set up the SDK in this process from the OTEL_* variables, when they ask for it."""
    global _provider
    wanted = os.environ.get("OTEL_TRACES_EXPORTER", "")
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not INSTALLED:
        return
    # imported now, not by the first enqueue or try (which would wait ~13 ms for it)
    from opentelemetry import trace

    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    if (not wanted and not endpoint) or wanted == "none":
        return
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if wanted == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME", "mq-service"), "mq.role": role}
    )
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(_provider)


def shutdown() -> None:
    """Export what this process still holds (a forked child may leave without atexit)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def _tracing() -> bool:
    """Whether spans would go anywhere: a tracer provider is set (by configure() or by the
    application's own code); without one, each span would be a no-op that still costs."""
    if not INSTALLED:
        return False
    from opentelemetry import trace

    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _parent(traceparent: str | None) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent or ""})


def _traceparent(span: Span) -> str | None:
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return f"00-{sc.trace_id:032x}-{sc.span_id:016x}-{int(sc.trace_flags):02x}"


def sending(
    pool: str, name: str, job_id: str, traceparent: str | None
) -> contextlib.AbstractContextManager[str | None]:
    """Around an enqueue: gives the trace context the job stores."""
    if not _tracing():
        return contextlib.nullcontext(traceparent)  # on every enqueue: no generator
    return _sending(pool, name, job_id, traceparent)


@contextlib.contextmanager
def _sending(pool: str, name: str, job_id: str, traceparent: str | None) -> Iterator[str | None]:
    from opentelemetry import context, trace

    parent = _parent(traceparent) if traceparent else context.get_current()
    span = trace.get_tracer("mq").start_span(
        f"send {pool}",
        context=parent,
        kind=trace.SpanKind.PRODUCER,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.destination.name": pool,
            "messaging.message.id": job_id,
            "mq.job.name": name,
        },
    )
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        yield _traceparent(span) or traceparent


class Processing:
    """The span of one try; `traceparent` is what the job's own calls carry on."""

    def __init__(self, span: Span | None, traceparent: str | None) -> None:
        self.span = span
        self.traceparent = traceparent
        self.token: Any = None

    def end(self, outcome: str, error: str | None = None) -> None:
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("mq.outcome", outcome)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()
        self.span = None


def processing(
    pool: str, name: str, job_id: str, attempt: int, consumer: str, traceparent: str | None
) -> Processing:
    """Start the span of a try (the caller makes it current around the job's code)."""
    if not _tracing():
        return Processing(None, tracing.child(traceparent))
    from opentelemetry import trace

    parent = _parent(traceparent)
    creation = trace.get_current_span(parent).get_span_context()
    span = trace.get_tracer("mq").start_span(
        f"process {pool}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        links=[trace.Link(creation)] if creation.is_valid else None,
        attributes={
            "messaging.system": SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": pool,
            "messaging.consumer.group.name": pool,
            "messaging.message.id": job_id,
            "messaging.client.id": consumer,
            "mq.job.name": name,
            "mq.job.attempt": attempt,
        },
    )
    if not span.is_recording():
        return Processing(None, tracing.child(traceparent))
    return Processing(span, _traceparent(span))


@contextlib.contextmanager
def current(run: Processing) -> Iterator[None]:
    """Make the try's span current around the job's code, so its own spans are children."""
    if run.span is None:
        yield
        return
    from opentelemetry import trace

    with trace.use_span(run.span, end_on_exit=False):
        yield
