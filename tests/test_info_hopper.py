"""INFO's `hopper` key: queues paused and draining now, connected workers and what they hold."""

import json
from typing import Any

import pytest

from hopper_broker.app import App
from hopper_client.schema.jobs import parse_time
from tests.conftest import eventually
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]


async def info(wire: Wire) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(await wire.call("INFO"))
    return document


async def test_paused_and_draining_queues(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    for queue in ("q1", "q2", "q3"):
        await w.call("PUSH", job(f"jid-{queue}-0001", queue=queue))
    await w.call("QUEUE PAUSE", "q1 q3")
    await w.call("QUEUE SET", "q2 draining=on")
    hopper = (await info(w))["hopper"]
    assert hopper["paused"] == ["q1", "q3"] and hopper["draining_queues"] == ["q2"]
    await w.call("QUEUE RESUME", "q3")
    await w.call("QUEUE SET", "q2 draining=off")
    hopper = (await info(w))["hopper"]
    assert hopper["paused"] == ["q1"] and hopper["draining_queues"] == []
    assert set((await info(w))["faktory"]["queues"]) == {"q1", "q2", "q3"}


async def test_workers_and_what_they_hold(broker: App) -> None:
    hello = {"wid": "w-one", "hostname": "box", "pid": 4242, "labels": ["py"]}
    worker = await Wire.open(broker.port, hello=hello)
    client = await Wire.open(broker.port, hello={})
    for i in range(3):
        await client.call("PUSH", job(f"held-{i:04d}", "Mail", reserve_for=120))
    first = json.loads(await worker.call("FETCH", "default"))
    second = json.loads(await worker.call("FETCH", "default"))
    workers = (await info(client))["hopper"]["workers"]
    assert workers["total"] == 1
    (shown,) = workers["listed"]
    assert (shown["wid"], shown["hostname"], shown["pid"], shown["state"]) == (
        "w-one",
        "box",
        4242,
        "running",
    )
    assert shown["labels"] == ["py"] and shown["connections"] == 1 and "more" not in shown
    held = {entry["jid"]: entry for entry in shown["jobs"]}
    assert set(held) == {first["jid"], second["jid"]}
    entry = held[first["jid"]]
    assert entry["queue"] == "default" and entry["jobtype"] == "Mail"
    assert parse_time(entry["reserved_until"]) - parse_time(entry["since"]) == 120
    assert await worker.call("ACK", {"jid": first["jid"]}) == b"OK"
    assert await worker.call("BEAT", {"wid": "w-one", "current_state": "quiet"})
    (shown,) = (await info(client))["hopper"]["workers"]["listed"]
    assert [entry["jid"] for entry in shown["jobs"]] == [second["jid"]]
    assert shown["state"] == "quiet"
    await worker.aclose()

    async def gone() -> bool:
        return bool((await info(client))["hopper"]["workers"] == {"total": 0, "listed": []})

    await eventually(gone)


async def test_worker_quiet_and_terminate(broker: App) -> None:
    worker = await Wire.open(broker.port, hello={"wid": "w-two"})
    admin = await Wire.open(broker.port, hello={})
    assert json.loads(await admin.call("WORKER QUIET", "w-two")) == {
        "wid": "w-two",
        "state": "quiet",
    }
    assert json.loads(await worker.call("BEAT", {"wid": "w-two"})) == {"state": "quiet"}
    assert await worker.call("FETCH", "default") is None  # a quiet worker gets no job
    assert json.loads(await admin.call("WORKER terminate", "w-two"))["state"] == "terminate"
    assert json.loads(await admin.call("WORKER QUIET", "w-two"))["state"] == "terminate"
    with pytest.raises(WireError, match="unknown worker w-none"):
        await admin.call("WORKER QUIET", "w-none")
    with pytest.raises(WireError, match="WORKER needs QUIET <wid> or TERMINATE <wid>"):
        await admin.call("WORKER STOP", "w-two")
