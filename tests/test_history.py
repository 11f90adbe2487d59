"""The history over the wire: every final state archived with its figures, queries by jid,
queue, jobtype, state and time range newest first, pages that neither skip nor repeat while jobs
keep ending, and retention rules that delete exactly what they say (by age, and by count over
every queue together) with work that follows what they delete."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import trio

from hopper_broker.__main__ import load_config, parser
from hopper_broker.app import App
from hopper_broker.config import DEFAULT_RETENTION, Retention
from hopper_broker.store.audit import Auditor
from hopper_broker.store.history_audit import HistoryAuditor
from hopper_client import AsyncClient, Client
from tests.conftest import StartBroker, check_store
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

QUIET = {"history_interval": 3600.0}  # the retention loop only when a test runs it


async def history(w: Wire, **query: Any) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(await w.call("HISTORY", query))
    return found


async def run(w: Wire, queue: str = "default", result: Any = None) -> str:
    """Fetch one job and ACK it (with `result`); returns its jid."""
    fetched = json.loads(await w.call("FETCH", queue))
    ack: dict[str, Any] = {"jid": fetched["jid"]}
    if result is not None:
        ack["result"] = result
    await w.call("ACK", ack)
    return str(fetched["jid"])


async def fail(w: Wire, queue: str = "default") -> str:
    fetched = json.loads(await w.call("FETCH", queue))
    report = {"jid": fetched["jid"], "errtype": "Boom", "message": "it broke", "backtrace": ["x"]}
    await w.call("FAIL", report)
    return str(fetched["jid"])


async def test_every_final_state_is_archived(start_broker: StartBroker, store_url: str) -> None:
    broker = await start_broker(**QUIET)
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    await w.call("PUSH", job("hist-done", "Mail", args=[1, "a"], reserve_for=600))
    await run(w, result={"sent": True})
    await w.call("PUSH", job("hist-discarded", retry=0))
    await fail(w)
    await w.call(
        "PUSH", job("hist-dead", retry=1, custom={"backoff": {"kind": "fixed", "delay": 0}})
    )
    await fail(w)  # to retries, due at once
    await w.call("PUSH", job("hist-cancelled", queue="other"))
    assert json.loads(await w.call("JOB", "CANCEL hist-cancelled"))["state"] == "cancelled"
    await w.call("PUSH", job("hist-expired", queue="other", custom={"expires_in": 0.001}))
    unique = {"unique_for": 60, "unique_until": "replace"}
    await w.call("PUSH", job("hist-replaced", "Sync", queue="u", args=[1], custom=unique))
    await w.call("PUSH", job("hist-replacer", "Sync", queue="u", args=[1], custom=unique))
    with trio.fail_after(10):
        while (await history(w, jid="hist-expired"))["jobs"] == []:
            await w.call("FETCH", "other")  # past its expiry: FETCH ends it
    with trio.fail_after(10):
        while (await history(w, jid="hist-dead"))["jobs"] == []:
            found = json.loads(await w.call("FETCH", "default") or "null")
            if found:
                await w.call("FAIL", {"jid": found["jid"], "errtype": "Boom", "message": "again"})
    states = {}
    for jid in (
        "hist-done",
        "hist-discarded",
        "hist-dead",
        "hist-cancelled",
        "hist-expired",
        "hist-replaced",
    ):
        (entry,) = (await history(w, jid=jid))["jobs"]
        states[jid] = entry
    assert {jid: e["state"] for jid, e in states.items()} == {
        "hist-done": "done",
        "hist-discarded": "discarded",
        "hist-dead": "dead",
        "hist-cancelled": "cancelled",
        "hist-expired": "expired",
        "hist-replaced": "replaced",
    }
    done = states["hist-done"]
    assert done["jobtype"] == "Mail" and done["queue"] == "default"
    assert done["job"]["args"] == [1, "a"] and done["result"] == {"sent": True}
    assert done["attempts"] == 1 and 0 <= done["run_seconds"] < 5
    assert done["ended_at"].endswith("Z") and "failure" not in done
    dead = states["hist-dead"]
    assert dead["attempts"] == 2 and dead["failure"]["errtype"] == "Boom"
    assert states["hist-discarded"]["attempts"] == 1
    assert (
        states["hist-cancelled"]["attempts"] == 0 and states["hist-cancelled"]["queue"] == "other"
    )
    check_store(store_url)


async def test_run_seconds_count_from_the_fetch_of_an_extended_reservation(
    broker: App,
) -> None:
    w = await Wire.open(broker.port, hello={"wid": "w1"})
    again = {"track": 1, "backoff": {"kind": "fixed", "delay": 0}}
    await w.call("PUSH", job("extended-1", reserve_for=60, retry=1, custom=again))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    extend = json.dumps({"jid": "extended-1", "reserve_until": until})
    for run_ in range(2):
        fetched = json.loads(await w.call("FETCH", "default"))
        assert fetched["jid"] == "extended-1"
        assert await w.call("TRACK", f"SET {extend}") == b"OK"  # 3,540 s more than asked
        if run_ == 0:
            await w.call("FAIL", {"jid": "extended-1", "errtype": "Boom", "message": "again"})
            await broker.manager.sweeps.enqueue_due("retries", broker.manager.clock())
        else:
            await w.call("TRACK", 'SET {"jid":"extended-1","percent":50}')  # more progress
    await w.call("ACK", {"jid": "extended-1"})
    (entry,) = (await history(w, jid="extended-1"))["jobs"]
    assert entry["attempts"] == 2 and 0 < entry["run_seconds"] < 5, entry
    await w.call("PUSH", job("extended-2", reserve_for=60, retry=1, custom=again))
    await w.call("FETCH", "default")
    assert await w.call("TRACK", f"SET {extend.replace('extended-1', 'extended-2')}") == b"OK"
    await w.call("FAIL", {"jid": "extended-2", "errtype": "Boom", "message": "again"})
    await broker.manager.sweeps.enqueue_due("retries", broker.manager.clock())
    assert json.loads(await w.call("FETCH", "default"))["jid"] == "extended-2"
    await w.call("ACK", {"jid": "extended-2"})  # this reservation was not extended
    (entry,) = (await history(w, jid="extended-2"))["jobs"]
    assert 0 < entry["run_seconds"] < 5, entry


async def test_args_can_be_left_out(start_broker: StartBroker) -> None:
    broker = await start_broker(history_args=False, **QUIET)
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("noargs-1", args=["secret"], custom={"k": 1}))
    await run(w)
    (entry,) = (await history(w, jid="noargs-1"))["jobs"]
    assert "args" not in entry["job"] and entry["job"]["custom"] == {"k": 1}


async def test_args_left_out_keep_every_other_byte(
    start_broker: StartBroker, rdb: redis.Redis
) -> None:
    broker = await start_broker(history_args=False, **QUIET)
    w = await Wire.open(broker.port, hello={})
    custom = {"id": 12345678901234567, "ratio": 0.1234567890123456, "tags": [], "jobtype": "X"}
    args = [{"args": [1], "x": '"args":['}]
    await w.call("PUSH", job("noargs-2", "Real", args=args, custom=custom))
    stored = rdb.hget("hopper:q:{default}:jobs", "noargs-2")
    await run(w)
    (entry,) = (await history(w, jid="noargs-2"))["jobs"]
    assert entry["jobtype"] == "Real" and entry["job"]["custom"] == custom
    assert "args" not in entry["job"]
    archived = rdb.hget("hopper:q:{default}:history", "noargs-2")
    assert stored is not None and archived is not None
    assert archived.endswith(stored[: stored.index(',"args":')] + "}}")
    assert rdb.zcard("hopper:q:{default}:ended:done:Real") == 1


async def test_a_jid_archived_again_without_its_record_keeps_its_entry_whole(
    broker: App, rdb: redis.Redis
) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("againjob-1", "First"))
    await run(w)  # archived done
    await w.call("PUSH", job("againjob-1", "Second", at="2099-01-01T00:00:00Z"))
    rdb.hdel("hopper:q:{default}:jobs", "againjob-1")  # its record lost: nothing to archive
    kill = {"cmd": "kill", "target": "scheduled", "filter": {"jids": ["againjob-1"]}}
    await w.call("MUTATE", kill)
    (entry,) = (await history(w, jid="againjob-1"))["jobs"]
    assert entry["state"] == "done" and entry["jobtype"] == "First"
    assert [e["jid"] for e in (await history(w, state="done"))["jobs"]] == ["againjob-1"]
    found = await Auditor(broker.manager.store).run()
    assert [p.kind for p in found.problems if p.kind.startswith("history")] == []


async def test_history_off_archives_nothing(start_broker: StartBroker) -> None:
    broker = await start_broker(history=False, **QUIET)
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSH", job("nohist-1"))
    await run(w)
    assert (await history(w, jid="nohist-1"))["jobs"] == []
    assert (await history(w))["jobs"] == []


async def test_queries_filter_by_queue_jobtype_state_and_time(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    for i in range(6):
        queue, jobtype = ("a", "Mail") if i % 2 else ("b", "Sms")
        await w.call("PUSH", job(f"filter-{i}", jobtype, queue=queue, retry=0))
        if i == 4:
            await fail(w, queue)
        else:
            await run(w, queue)
    everything = (await history(w))["jobs"]
    assert [e["jid"] for e in everything] == [f"filter-{i}" for i in reversed(range(6))]
    assert [e["jid"] for e in (await history(w, queue="a"))["jobs"]] == [
        "filter-5",
        "filter-3",
        "filter-1",
    ]
    sms = await history(w, jobtype="Sms", state="done")
    assert [e["jid"] for e in sms["jobs"]] == ["filter-2", "filter-0"]
    assert [e["jid"] for e in (await history(w, state=["discarded"]))["jobs"]] == ["filter-4"]
    middle = everything[3]["ended_at"], everything[1]["ended_at"]
    ranged = await history(w, since=middle[0], until=middle[1])
    assert [e["jid"] for e in ranged["jobs"]] == ["filter-4", "filter-3", "filter-2"]
    for bad, message in (
        ({"state": "running"}, "not a final state"),
        ({"count": 0}, "count must be between"),
        ({"cursor": "nope"}, "not a cursor"),
        ({"cursor": "nan|filter-1"}, "not a cursor"),
        ({"cursor": "1_000|filter-1"}, "not a cursor"),
        ({"since": "yesterday"}, "unix seconds or RFC 3339"),
        ({"queue": "no such"}, "no such queue"),
        ({"colour": "red"}, "invalid HISTORY"),
    ):
        try:
            await w.call("HISTORY", bad)
        except WireError as exc:
            assert message in str(exc), (bad, str(exc))
        else:
            raise AssertionError(f"HISTORY {bad} was accepted")


async def test_pages_walk_every_entry_once_while_jobs_keep_ending(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSHB", [job(f"page-{i:04d}", queue=f"q{i % 3}") for i in range(300)])
    fetched = [json.loads(await w.call("FETCH", f"q{i % 3}"))["jid"] for i in range(300)]
    acks = b"".join(b'ACK {"jid":"%s"}\r\n' % jid.encode() for jid in fetched)
    await w.send(acks)  # pipelined: many end in one script call, at one time
    assert [await w.reply() for _ in fetched] == [b"OK"] * 300
    seen: list[str] = []
    page = await history(w, count=7)
    for late in range(100):
        seen += [e["jid"] for e in page["jobs"]]
        if not page["cursor"]:
            break
        await w.call("PUSH", job(f"latejob-{late}", queue="q1"))  # newer: not in this walk
        await run(w, "q1")
        page = await history(w, count=7, cursor=page["cursor"])
    assert sorted(seen) == sorted(fetched)  # each once, none of the later ones


async def test_pages_walk_more_than_a_thousand_entries_of_one_time(
    broker: App, rdb: redis.Redis
) -> None:
    w = await Wire.open(broker.port, hello={})
    unique = {"unique_for": 60, "unique_until": "replace"}
    holders = [job(f"tied-{i:04d}", "Tie", args=[i], custom=unique) for i in range(1100)]
    await w.call("PUSHB", holders)
    replacers = [job(f"tier-{i:04d}", "Tie", args=[i], custom=unique) for i in range(1100)]
    await w.call("PUSHB", replacers)  # one PUSHB, one time: 1,100 replaced at one score
    scored = rdb.zrange("hopper:q:{default}:ended:replaced", 0, -1, withscores=True)
    assert len(scored) == 1100 and len({score for _, score in scored}) == 1
    seen: list[str] = []
    page = await history(w, state="replaced", count=100)
    while True:
        seen += [e["jid"] for e in page["jobs"]]
        if not page["cursor"]:
            break
        if len(seen) == 600:  # the cursor's own entry leaves the index between two pages
            await w.call("PUSH", job(seen[-1], priority=9))
            assert await run(w) == seen[-1]
        page = await history(w, state="replaced", count=100, cursor=page["cursor"])
    assert seen == [f"tied-{i:04d}" for i in reversed(range(1100))]  # each once, ties by jid
    assert (await history(w, jid="tied-0500"))["jobs"][0]["state"] == "done"


async def test_retention_by_age_deletes_exactly_the_old(
    start_broker: StartBroker, rdb: redis.Redis
) -> None:
    broker = await start_broker(retention={"done": Retention(ttl=100.0, max=1000)}, **QUIET)
    w = await Wire.open(broker.port, hello={})
    for i in range(20):
        await w.call("PUSH", job(f"agejob-{i:02d}"))
        await run(w)
    entries = (await history(w, count=100))["jobs"]
    newest_first = [e["jid"] for e in entries]
    cutoff = float(await _score(rdb, "default", "agejob-09"))
    deleted = await broker.manager.history.retain(cutoff + 100.0)
    assert deleted == 10
    left = [e["jid"] for e in (await history(w, count=100))["jobs"]]
    assert left == newest_first[:10]
    assert await broker.manager.history.retain(cutoff + 100.0) == 0


async def test_retention_by_count_keeps_the_newest_of_every_queue(
    start_broker: StartBroker,
) -> None:
    broker = await start_broker(retention={"done": Retention(ttl=86_400.0, max=25)}, **QUIET)
    w = await Wire.open(broker.port, hello={})
    for i in range(60):
        await w.call("PUSH", job(f"countjob-{i:02d}", queue=("x", "y", "z")[i % 3]))
        await run(w, ("x", "y", "z")[i % 3])
    await w.call("PUSH", job("countdead", retry=0))
    await fail(w)  # another state: its own rule
    newest = [e["jid"] for e in (await history(w, state="done", count=25))["jobs"]]
    assert await broker.manager.history.retain(broker.manager.clock()) == 35
    left = [e["jid"] for e in (await history(w, state="done", count=100))["jobs"]]
    assert left == newest
    assert (await history(w, jid="countdead"))["jobs"][0]["state"] == "discarded"


async def test_retention_work_follows_deletions_not_what_is_kept(
    start_broker: StartBroker, rdb: redis.Redis
) -> None:
    idle = {name: 3600.0 for name in ("scheduler_interval", "reaper_interval")}
    idle |= {"dead_purge_interval": 3600.0, "worker_reaper_interval": 3600.0}
    broker = await start_broker(**QUIET, **idle)
    w = await Wire.open(broker.port, hello={})

    async def calls_of_a_pass() -> int:
        rdb.config_resetstat()
        await broker.manager.history.retain(broker.manager.clock())
        stats = rdb.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_config")

    await w.call("PUSHB", [job(f"fewjobs-{i}", queue=f"k{i}") for i in range(5)])
    for i in range(5):
        await run(w, f"k{i}")
    few = await calls_of_a_pass()
    await w.call("PUSHB", [job(f"manyjobs-{i}", queue=f"k{i % 5}") for i in range(2000)])
    for i in range(5):
        for _ in range(400):
            await run(w, f"k{i}")
    assert await calls_of_a_pass() == few


async def test_check_finds_nothing_while_retention_deletes(broker: App) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSHB", [job(f"racing-{i:03d}", "Race") for i in range(600)])
    fetched = [json.loads(await w.call("FETCH", "default"))["jid"] for _ in range(600)]
    await w.send(b"".join(b'ACK {"jid":"%s"}\r\n' % jid.encode() for jid in fetched))
    assert [await w.reply() for _ in fetched] == [b"OK"] * 600
    store, problems = broker.manager.store, []

    async def retention(cancel: trio.CancelScope) -> None:  # a broker's loop, one at a time
        while await store.history.purge("default", "done", "+inf", 1):
            pass
        cancel.cancel()

    with trio.CancelScope() as audits:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(retention, audits)
            while True:
                await HistoryAuditor(store, lambda *p: problems.append(p), repair=False).run()
    assert problems == []


@pytest.mark.parametrize("store_mode", ["one", "split"], indirect=True)  # one Redis's bytes
async def test_retention_by_count_over_many_queues_reads_what_it_deletes(
    start_broker: StartBroker, rdb: redis.Redis
) -> None:
    idle = {name: 3600.0 for name in ("scheduler_interval", "reaper_interval")}
    idle |= {"dead_purge_interval": 3600.0, "worker_reaper_interval": 3600.0}
    rule = {"done": Retention(ttl=86_400.0, max=19_000)}
    broker = await start_broker(retention=rule, **QUIET, **idle)
    w = await Wire.open(broker.port, hello={})
    for start in range(0, 20_000, 1000):  # 100 queues, their jobs ending in turn
        pushed = [job(f"wide-{i:05d}", queue=f"w{i % 100}") for i in range(start, start + 1000)]
        await w.call("PUSHB", pushed)
    await w.send(b"".join(b"FETCH w%d\r\n" % q for q in range(100) for _ in range(200)))
    fetched = [json.loads(await w.reply())["jid"] for _ in range(20_000)]
    fetched.sort(key=lambda jid: int(jid[5:]))  # acknowledged in turn: one queue after another
    await w.send(b"".join(b'ACK {"jid":"%s"}\r\n' % jid.encode() for jid in fetched))
    assert [await w.reply() for _ in fetched] == [b"OK"] * 20_000
    reads = rdb.pipeline(transaction=False)
    for jid in fetched:
        reads.zscore(f"hopper:q:{{w{int(jid[5:]) % 100}}}:ended:done", jid)
    scored = dict(zip(fetched, map(float, reads.execute()), strict=True))
    oldest = set(sorted(scored, key=scored.__getitem__)[:1000])
    before = rdb.info("stats")["total_net_output_bytes"]
    assert await broker.manager.history.retain(broker.manager.clock()) == 1000
    read = rdb.info("stats")["total_net_output_bytes"] - before
    assert read < 200 * 1000, read  # not the 1,000 oldest of each of the 100 queues (~840 kB)
    kept = {jid for q in range(100) for jid in rdb.hkeys(f"hopper:q:{{w{q}}}:history")}
    assert len(kept) == 19_000 and not kept & oldest  # the oldest 1,000, every queue together


async def _score(rdb: redis.Redis, queue: str, jid: str) -> float:
    found = rdb.zscore(f"hopper:q:{{{queue}}}:ended:done", jid)
    assert found is not None
    return float(found)


async def test_the_clients_walk_the_history(broker: App) -> None:
    async with AsyncClient(f"tcp://127.0.0.1:{broker.port}") as client:
        for i in range(5):
            await client.push("Report", [i], queue="reports", jid=f"client-{i}")
        for _ in range(5):
            found = await client.fetch("reports")
            assert found is not None
            await client.ack(found.jid)
        page = await client.history(queue="reports", count=2)
        seen = [e.jid for e in page.jobs]
        while page.cursor is not None:
            page = await client.history(queue="reports", count=2, cursor=page.cursor)
            seen += [e.jid for e in page.jobs]
        assert seen == [f"client-{i}" for i in reversed(range(5))]
        (entry,) = (await client.history("client-3")).jobs
        assert entry.state == "done" and entry.job["args"] == [3] and entry.result is None

    def sync_side() -> list[str]:
        with Client(f"tcp://127.0.0.1:{broker.port}") as client:
            return [e.jid for e in client.history(jobtype="Report", state="done").jobs]

    assert await trio.to_thread.run_sync(sync_side) == [f"client-{i}" for i in range(4, -1, -1)]


async def test_flush_empties_the_history_and_the_file_sets_retention(
    broker: App, tmp_path: Path
) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSHB", [job(f"flushed-{i}", queue=f"fq{i % 2}") for i in range(30)])
    for i in range(30):
        await run(w, f"fq{i % 2}")
    assert len((await history(w, count=100))["jobs"]) == 30
    await w.call("FLUSH")
    assert (await history(w, count=100))["jobs"] == []
    assert set((await broker.manager.store.history.counts()).values()) == {0}
    path = tmp_path / "hopper.toml"
    path.write_text("[retention.done]\nttl = 3600\nmax = 5\n[retention.dead]\nttl = 60\nmax = 1\n")
    config = load_config(parser().parse_args(["run", "--config", str(path)]), {})
    assert config.retention_of("done") == Retention(3600.0, 5)
    assert config.retention_of("expired") == DEFAULT_RETENTION["expired"]
    path.write_text("[retention.running]\nttl = 1\nmax = 1\n")
    with pytest.raises(ValueError, match=r"retention\.running: not a final state"):
        load_config(parser().parse_args(["run", "--config", str(path)]), {}).check()


async def test_check_finds_and_repairs_a_broken_history(
    broker: App, rdb: redis.Redis, store_url: str
) -> None:
    w = await Wire.open(broker.port, hello={})
    await w.call("PUSHB", [job(f"audited-{i}", "Audit") for i in range(4)])
    for _ in range(4):
        await run(w)
    ended = "hopper:q:{default}:ended:done"
    rdb.zrem(ended, "audited-0")  # an entry not indexed
    rdb.zadd(f"{ended}:Audit", {"no-such-entry": 1.0})  # an index entry without entry
    rdb.hincrby("hopper:g:{g}:history:count", "done", 7)  # a wrong count (one Redis only)
    rdb.zrem("hopper:g:{g}:due:ended:done", "default")  # a due entry missing
    store = broker.manager.store
    found = await Auditor(store).run()
    kinds = sorted(p.kind for p in found.problems)
    counted = [] if store.redis.split else ["history count wrong"]
    assert kinds == [
        *counted,
        "history due entry missing",
        "history entry not indexed",
        "history index entry without entry",
    ]
    assert not found.clean
    assert (await Auditor(store, repair=True).run()).clean
    assert (await Auditor(store).run()).problems == []
    assert len((await history(w, jobtype="Audit"))["jobs"]) == 4
    check_store(store_url)
