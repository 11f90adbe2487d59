"""Traces through jobs: the producer's W3C trace context rides in the job's custom fields
(`traceparent`, `tracestate`) and the worker continues it in a span of its own.

Both go through OpenTelemetry's API when it is installed (its global propagator and tracer
provider, as the application set them up) and do nothing when it is not.
"""

import functools
import importlib.util
from types import ModuleType
from typing import Any

from hopper_client.execution import Next
from hopper_client.schema.jobs import Job

TRACER = "hopper"  # the instrumentation scope of the worker's spans


@functools.cache
def _opentelemetry() -> tuple[ModuleType, ModuleType] | None:
    """opentelemetry's propagate and trace modules, or None when it is not installed."""
    if importlib.util.find_spec("opentelemetry") is None:
        return None
    try:
        from opentelemetry import propagate, trace
    except ImportError:
        return None
    return propagate, trace


def inject(custom: dict[str, Any] | None) -> dict[str, Any] | None:
    """`custom` plus the current trace context (unchanged outside a trace or without
    OpenTelemetry)."""
    otel = _opentelemetry()
    if otel is None:
        return custom
    carrier: dict[str, str] = {}
    otel[0].inject(carrier)
    return {**(custom or {}), **carrier} if carrier else custom


async def continue_trace(job: Job, call_next: Next) -> None:
    """Worker middleware: run the job in a CONSUMER span that continues the trace its
    producer carried (a new trace when it carried none)."""
    otel = _opentelemetry()
    if otel is None:
        await call_next()
        return
    propagate, trace = otel
    carrier = {k: v for k, v in (job.custom or {}).items() if isinstance(v, str)}
    parent = propagate.extract(carrier)
    attributes = {
        "messaging.system": "hopper",
        "messaging.operation": "process",
        "messaging.destination.name": job.queue,
        "messaging.message.id": job.jid,
        "hopper.jobtype": job.jobtype,
    }
    tracer = trace.get_tracer(TRACER)
    with tracer.start_as_current_span(
        f"{job.jobtype} process",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes=attributes,
    ):
        await call_next()
