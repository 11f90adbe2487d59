"""Traces and logs of task jobs: the producer's trace is continued by the worker (checked with
OpenTelemetry's in-memory exporter), the per-job log line carries structured fields, and the
client works without OpenTelemetry."""

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from hopper_client import Tasks, current_job
from hopper_client.testing import WorkerRun
from tests.conftest import BrokerProcess, clean_env

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

_EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans ended during the test (the global tracer provider is set once a process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def test_the_worker_continues_the_producers_trace(
    broker_process,  # type: ignore[no-untyped-def]
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker: BrokerProcess = broker_process()
    jobs = Tasks()
    inside: list[int] = []

    @jobs.task()
    async def audit(email: str) -> None:  # pushed by a job: the trace goes on
        inside.append(trace.get_current_span().get_span_context().span_id)

    @jobs.task(queue="mail")
    def send_welcome(email: str) -> None:
        inside.append(trace.get_current_span().get_span_context().span_id)
        if email.startswith("ada"):
            audit.push(email)

    caplog.set_level(logging.INFO, logger="hopper_client.worker")
    with WorkerRun(jobs, broker.url) as run:
        with trace.get_tracer("shop").start_as_current_span("POST /signup") as request:
            jid = send_welcome.push("ada@example.com")
        untraced = send_welcome.push("bob@example.com")
        run.wait()
    ended = {
        (span.attributes or {}).get("messaging.message.id", span.name): span
        for span in spans.get_finished_spans()
    }
    job_span, other = ended[jid], ended[untraced]
    assert job_span.name == "send_welcome process"
    assert job_span.kind is trace.SpanKind.CONSUMER
    assert job_span.parent is not None
    assert job_span.parent.span_id == request.get_span_context().span_id
    assert job_span.context.trace_id == request.get_span_context().trace_id
    assert dict(job_span.attributes or {}) == {
        "messaging.system": "hopper",
        "messaging.operation": "process",
        "messaging.destination.name": "mail",
        "messaging.message.id": jid,
        "hopper.jobtype": "send_welcome",
    }
    assert job_span.context.span_id in inside  # the job's own code runs inside the span
    (audit_span,) = [span for span in ended.values() if span.name == "audit process"]
    assert audit_span.parent is not None
    assert audit_span.parent.span_id == job_span.context.span_id
    assert audit_span.context.trace_id == job_span.context.trace_id
    assert audit_span.context.span_id in inside
    assert other.parent is None  # pushed outside a trace: a trace of its own
    assert "POST /signup" in ended

    lines = {r.jid: r for r in caplog.records if getattr(r, "jid", None) in (jid, untraced)}
    record = lines[jid]
    assert (record.jobtype, record.queue, record.attempt, record.outcome) == (  # type: ignore[attr-defined]
        "send_welcome",
        "mail",
        1,
        "done",
    )
    assert record.duration >= 0  # type: ignore[attr-defined]


def test_a_retried_job_logs_its_attempt(
    broker_process,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker: BrokerProcess = broker_process()
    jobs = Tasks()

    @jobs.task(retry=3)
    def flaky() -> None:
        if current_job().failure is None:
            raise RuntimeError("first time")

    caplog.set_level(logging.INFO, logger="hopper_client.worker")
    with WorkerRun(jobs, broker.url) as run:
        jid = flaky.push()
        assert [state.state for state in run.wait(failed_ok=True)] == ["retrying"]
        run.client.mutate("requeue", "retries", jids=[jid])
        assert [state.state for state in run.wait()] == ["done"]
    lines = [(r.attempt, r.outcome) for r in caplog.records if getattr(r, "jid", None) == jid]
    assert lines == [(1, "failed"), (2, "done")]


NO_OTEL = """
import sys
sys.modules["opentelemetry"] = None  # as if it were not installed
from hopper_client import Tasks, current_job
from hopper_client.tracing import inject

assert inject(None) is None and inject({"a": 1}) == {"a": 1}
jobs = Tasks(eager=True)
done = []

@jobs.task()
def work(n: int) -> None:
    done.append(n)

assert work.make(1).custom is None
work.push(7)
assert done == [7]
print("ok")
"""


def test_the_client_works_without_opentelemetry() -> None:
    done = subprocess.run(
        [sys.executable, "-c", NO_OTEL], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    assert done.stdout.strip() == "ok", done.stderr
