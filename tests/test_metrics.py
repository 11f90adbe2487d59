"""/metrics after a known workload, parsed by the Prometheus client's own parser: every
documented metric is there with the values the workload implies; as on one Redis, in split
mode and on the cluster rig."""

import re
import types
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hopper_broker.app import App
from hopper_broker.stats import Stats
from hopper_broker.web import metrics as web_metrics
from tests.conftest import StartBroker
from tests.wire import Wire, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

DOC = Path(__file__).parent.parent / "docs" / "dashboard.md"


async def scrape(
    app: App, **options: object
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"http://127.0.0.1:{app.dashboard_port}/metrics", **options)  # type: ignore[arg-type]
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def documented() -> list[str]:
    """The metric names docs/dashboard.md lists (`hopper_...` in its metrics table)."""
    return sorted(set(re.findall(r"^\| `(hopper_[a-z_]+)`", DOC.read_text(), re.MULTILINE)))


async def test_metrics_after_a_known_workload(start_broker: StartBroker) -> None:
    app = await start_broker(dashboard_bind="127.0.0.1:0")
    worker = await Wire.open(app.port, hello={"hostname": "h", "wid": "w1", "pid": 1})
    for i in range(3):
        assert await worker.call("PUSH", job(f"jobid-a{i}", "resize", queue="images")) == b"OK"
    for i in range(2):
        assert await worker.call("PUSH", job(f"jobid-b{i}", "mail", queue="mail")) == b"OK"
    fetched = [await worker.call("FETCH", "images") for _ in range(3)]
    assert all(fetched)
    assert await worker.call("ACK", {"jid": "jobid-a0"}) == b"OK"
    assert await worker.call("ACK", {"jid": "jobid-a1"}) == b"OK"
    failure = {"jid": "jobid-a2", "errtype": "Boom", "message": "no"}
    assert await worker.call("FAIL", failure) == b"OK"

    got = await scrape(app)

    def value(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    names = {name for name, _ in got}
    for name in documented():
        assert any(n == name or n.startswith(f"{name}_") for n in names), name
    assert value("hopper_jobs_processed_total", queue="images", jobtype="resize") == 2
    assert value("hopper_jobs_failed_total", queue="images", jobtype="resize") == 1
    assert value("hopper_command_duration_seconds_count", verb="PUSH") == 5
    assert value("hopper_command_duration_seconds_count", verb="FETCH") == 3
    assert value("hopper_command_duration_seconds_count", verb="ACK") == 2
    assert value("hopper_command_duration_seconds_count", verb="FAIL") == 1
    assert value("hopper_command_duration_seconds_sum", verb="ACK") > 0
    assert value("hopper_command_duration_seconds_bucket", verb="ACK", le="+Inf") == 2
    assert value("hopper_queue_size", queue="mail") == 2
    assert value("hopper_queue_size", queue="images") == 0
    assert value("hopper_queue_latency_seconds", queue="mail") >= 0
    assert value("hopper_queue_paused", queue="mail") == 0
    assert value("hopper_set_size", set="retries") == 1
    assert value("hopper_set_size", set="dead") == 0
    assert value("hopper_workers") == 1
    assert value("hopper_connections") == 1
    assert value("hopper_commands_total") >= 11
    assert value("hopper_broker_processed_total") == 3  # failures count as processed (INFO)
    assert value("hopper_broker_failures_total") == 1
    assert value("hopper_redis_up") == 1
    assert value("hopper_redis_used_memory_bytes") > 0
    assert value("hopper_draining") == 0
    assert 0 <= value("hopper_event_loop_lag_seconds") < 60
    assert value("hopper_loop_cycles_total", loop="Scheduled") >= 1
    await worker.aclose()


async def test_metrics_count_jobs_this_process_did_not_hand_out(start_broker: StartBroker) -> None:
    """An ACK for a job fetched through another broker counts under its queue, jobtype ''."""
    first = await start_broker(dashboard_bind="127.0.0.1:0")
    second = await start_broker()
    producer = await Wire.open(second.port, hello={"hostname": "h"})
    assert await producer.call("PUSH", job("jobid-x1", "resize", queue="images")) == b"OK"
    assert await producer.call("FETCH", "images")
    worker = await Wire.open(first.port, hello={"hostname": "h"})
    assert await worker.call("ACK", {"jid": "jobid-x1"}) == b"OK"
    got = await scrape(first)
    assert got[("hopper_jobs_processed_total", (("jobtype", ""), ("queue", "")))] == 1
    assert got[("hopper_broker_processed_total", ())] == 1
    for wire in (producer, worker):
        await wire.aclose()


def test_each_counter_counts_at_most_max_series_pairs_apart() -> None:
    metrics = web_metrics.Metrics(types.SimpleNamespace(stats=Stats()))  # type: ignore[arg-type]
    pairs = 1500  # all ACKs: hopper_jobs_processed only
    metrics.finished([(f"jid-{i:08d}", f"q{i}") for i in range(pairs)], True)
    processed = next(m for m in metrics.collect() if m.name == "hopper_jobs_processed").samples
    apart = {s.labels["queue"] for s in processed if s.name.endswith("_total")}
    assert len(apart) == web_metrics.MAX_SERIES and "other" in apart  # docs/dashboard.md
