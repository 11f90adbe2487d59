"""A job waiting for its dependencies that ends other than by their ends (cancelled, replaced
by a unique push) leaves nothing behind: it never runs, and a later job of its jid waits for
its own dependencies only."""

import json
from typing import Any

import pytest
import redis

from hopper_broker.app import App
from hopper_broker.store.audit import Auditor
from hopper_broker.store.keys import QueueKeys
from tests.conftest import check_store_aside, eventually
from tests.wire import Wire, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster(split=True)]


def after(jid: str, deps: list[str], policy: str = "", **custom: Any) -> dict[str, Any]:
    extra: dict[str, Any] = {"after": deps, **custom}
    if policy:
        extra["after_policy"] = policy
    return job(jid, custom=extra)


async def state(w: Wire, jid: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("JOB", f"STATE {jid}"))
    return found


async def fetch_all(w: Wire, queue: str = "default") -> list[str]:
    """Every jid a FETCH hands out now (until one answers nothing)."""
    got = []
    while True:
        reply = await w.call("FETCH", queue)
        if reply is None:
            return got
        got.append(json.loads(reply)["jid"])


async def test_a_blocked_job_replaced_by_a_unique_push_never_runs(
    broker: App, store_url: str
) -> None:
    """A blocked job (custom.after) holding a `replace` lock is a waiting job: a replace push
    ends it `replaced`. It must leave `blocked` then; else, once its dependency is ACKed, it is
    released and runs although it ended replaced (and is in two places meanwhile)."""
    w = await Wire.open(broker.port, hello={})
    rule = {"unique_for": 600, "unique_until": "replace", "unique_key": "debounce"}
    await w.call("PUSH", job("e-root-1"))
    await w.call("PUSH", after("e-dependant-1", ["e-root-1"], **rule))
    assert (await state(w, "e-dependant-1"))["state"] == "blocked"
    await w.call("PUSH", after("e-dependant-2", ["e-root-1"], **rule))  # replaces e-dependant-1
    assert (await state(w, "e-dependant-1"))["state"] == "replaced"
    root = json.loads(await w.call("FETCH", "default"))
    assert root["jid"] == "e-root-1"
    await w.call("ACK", {"jid": "e-root-1"})
    ran = await fetch_all(w)
    for jid in ran:
        await w.call("ACK", {"jid": jid})
    assert ran == ["e-dependant-2"], ran
    assert (await state(w, "e-dependant-1"))["state"] == "replaced"
    await check_store_aside(store_url)


async def test_a_dependant_pushed_again_after_its_cancel_waits_for_every_dependency(
    broker: App, store_url: str
) -> None:
    """A blocked job cancelled (JOB CANCEL) is finished: its jid is free again. Pushed again
    with the same dependencies, it must wait for all of them; the first cancel left its name in
    each dependency's `dependants`, so the ACK of one dependency settles it twice and releases
    it while the other still waits to run."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("e-first-1"))
    await w.call("PUSH", job("e-second-1", queue="later"))  # not fetched in this test
    await w.call("PUSH", after("e-both-1", ["e-first-1", "e-second-1"]))
    assert json.loads(await w.call("JOB", "CANCEL e-both-1"))["state"] == "cancelled"
    await w.call("PUSH", after("e-both-1", ["e-first-1", "e-second-1"]))  # the jid is free
    assert (await state(w, "e-both-1"))["state"] == "blocked"
    first = json.loads(await w.call("FETCH", "default"))
    assert first["jid"] == "e-first-1"
    await w.call("ACK", {"jid": "e-first-1"})
    # e-second-1 has not even run: e-both-1 must still be blocked
    assert (await state(w, "e-second-1"))["state"] == "queued"
    assert (await state(w, "e-both-1"))["state"] == "blocked"
    await check_store_aside(store_url)


async def test_a_job_is_not_cancelled_by_the_end_of_a_job_it_does_not_wait_for(
    broker: App, store_url: str
) -> None:
    """The same stale `dependants` name, seen from the other side: a jid reused for a dependant
    of other jobs is settled by the end of a job only its first holder waited for. Here the
    new job waits for nothing that failed, yet it ends cancelled when that job dies."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("e-doomed-1", retry=-1))  # dies at its first failure
    await w.call("PUSH", job("e-fine-1", queue="other"))
    await w.call("PUSH", after("e-reused-1", ["e-doomed-1"]))
    assert json.loads(await w.call("JOB", "CANCEL e-reused-1"))["state"] == "cancelled"
    await w.call("PUSH", after("e-reused-1", ["e-fine-1"]))  # a new job: waits for e-fine-1 only
    doomed = json.loads(await w.call("FETCH", "default"))
    assert doomed["jid"] == "e-doomed-1"
    await w.call("FAIL", {"jid": "e-doomed-1", "message": "boom"})
    assert (await state(w, "e-doomed-1"))["state"] == "dead"
    await broker.manager.workflows.settle(broker.manager.clock())  # what the loop does
    assert (await state(w, "e-reused-1"))["state"] == "blocked"
    fine = json.loads(await w.call("FETCH", "other"))
    await w.call("ACK", {"jid": fine["jid"]})
    released = await eventually(lambda: w.call("FETCH", "default"), 5)
    assert json.loads(released)["jid"] == "e-reused-1"
    await w.call("ACK", {"jid": "e-reused-1"})
    await check_store_aside(store_url)


async def test_repair_settles_a_stranded_job_whose_met_dependency_comes_first(
    broker: App, rdb: redis.Redis
) -> None:
    """`hopper check --repair` marks as ended the dependencies a stranded job still waits for
    (its `unmet` list), not the ones it already had (the first of its `after`)."""
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("jobs-met-9", queue="first"))
    fetched = json.loads(await w.call("FETCH", "first"))
    await w.call("ACK", {"jid": fetched["jid"]})
    await w.call("PUSH", job("jobs-dep-9", queue="other"))
    await w.call("PUSH", after("jobs-wait-9", ["jobs-met-9", "jobs-dep-9"]))
    rdb.hdel(QueueKeys("other").dependants, "jobs-dep-9")  # its end will never come
    found = await Auditor(broker.manager.store).run()
    assert [(p.kind, p.jid) for p in found.problems] == [("blocked for good", "jobs-wait-9")]
    await Auditor(broker.manager.store, repair=True).run()

    async def cancelled() -> bool:
        return (await state(w, "jobs-wait-9"))["state"] == "cancelled"  # policy fail

    await eventually(cancelled, 5)
