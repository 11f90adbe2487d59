"""Periodic (cron) jobs: schedules, their settings, the loop, exactly once across brokers and
restarts, the missed-tick policy, SIGHUP and CRON LIST."""

import json
import logging
import re
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
import redis
import trio

from hopper_broker.__main__ import load_config, parser
from hopper_broker.app import App
from hopper_broker.cron import CronEntry, CronJob, Schedule, compile_entry
from hopper_broker.crontab import LATE
from hopper_broker.store.keys import CRON, QueueKeys
from hopper_client.schema.jobs import parse_time
from tests.conftest import BrokerProcess, StartBroker, check_store, eventually
from tests.wire import SyncWire, Wire

UTC = ZoneInfo("UTC")
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
EVERY_SECOND = CronEntry("* * * * * *", CronJob("Tick", queue="cron"))


def at(text: str, zone: ZoneInfo = UTC) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local(t: float | None, zone: ZoneInfo = UTC) -> str:
    assert t is not None
    return datetime.fromtimestamp(t, zone).isoformat()


def fires(schedule: str, start: str, count: int, zone: ZoneInfo = UTC) -> list[str]:
    """The first `count` fire times after `start` (local ISO times with offsets)."""
    parsed, t, found = Schedule.parse(schedule), at(start, zone), []
    for _ in range(count):
        t = parsed.next_after(t, zone)  # type: ignore[assignment]
        found.append(local(t, zone))
    return found


# -- schedules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "start", "expected"),
    [
        ("*/20 * * * *", "2026-01-01T10:05:00", ["10:20:00", "10:40:00", "11:00:00"]),
        ("*/20 * * * * *", "2026-01-01T10:05:07", ["10:05:20", "10:05:40", "10:06:00"]),
        ("10-50/20 * * * * *", "2026-01-01T10:05:30", ["10:05:50", "10:06:10", "10:06:30"]),
        ("5,7 0-1 * * * *", "2026-01-01T23:59:59", ["00:00:05", "00:00:07", "00:01:05"]),
        ("0 0 9-17/4 * * *", "2026-01-01T10:00:00", ["13:00:00", "17:00:00", "09:00:00"]),
        ("30/15 * * * * *", "2026-01-01T10:00:00", ["10:00:30", "10:00:45", "10:01:30"]),
    ],
)
def test_fields_steps_ranges_lists(schedule: str, start: str, expected: list[str]) -> None:
    assert [t[11:19] for t in fires(schedule, start, 3)] == expected


def test_names_and_sunday_as_7() -> None:
    # 2026-01-01 is a Thursday
    assert fires("0 9 * jan,MAR mon-wed", "2026-01-01T00:00:00", 3) == [
        "2026-01-05T09:00:00+00:00",
        "2026-01-06T09:00:00+00:00",
        "2026-01-07T09:00:00+00:00",
    ]
    assert fires("0 0 * * 7", "2026-01-01T00:00:00", 1) == fires("0 0 * * sun", "2026-01-01", 1)
    assert fires("0 0 1 feb *", "2026-03-01T00:00:00", 1) == ["2027-02-01T00:00:00+00:00"]


def test_day_of_month_and_week_as_vixie_cron() -> None:
    # both restricted: either matches (the 13th, or any Friday)
    assert fires("0 0 13 * fri", "2026-01-01T00:00:00", 3) == [
        "2026-01-02T00:00:00+00:00",
        "2026-01-09T00:00:00+00:00",
        "2026-01-13T00:00:00+00:00",
    ]
    # a field starting with * counts as unrestricted: both must match (a Sunday the 13th)
    assert fires("0 0 13 * */7", "2026-01-01T00:00:00", 1) == ["2026-09-13T00:00:00+00:00"]
    assert fires("0 0 */10 * mon", "2026-01-01T00:00:00", 1) == ["2026-05-11T00:00:00+00:00"]
    # Feb 29 (and Feb 29 on a Sunday), across 2100, which is no leap year
    assert fires("0 0 29 2 *", "2096-03-01T00:00:00", 1) == ["2104-02-29T00:00:00+00:00"]
    assert fires("0 0 29 2 */7", "2026-01-01T00:00:00", 1) == ["2032-02-29T00:00:00+00:00"]


def test_dst_skipped_times_never_fire_repeated_ones_once() -> None:
    # Paris: 2026-03-29 02:00 -> 03:00 (no 02:30), 2026-10-25 03:00 -> 02:00 (02:30 twice)
    assert fires("30 2 * * *", "2026-03-28T12:00:00", 2, PARIS) == [
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]
    assert fires("30 2 * * *", "2026-10-24T12:00:00", 2, PARIS) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    assert fires("0 */30 * * * *", "2026-10-25T01:40:00", 4, PARIS) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    # New York: 2026-03-08 02:00 -> 03:00; every second runs straight from 01:59:59 to 03:00
    assert fires("* * * * * *", "2026-03-08T01:59:58", 2, NEW_YORK) == [
        "2026-03-08T01:59:59-05:00",
        "2026-03-08T03:00:00-04:00",
    ]


def test_latest_fire_time_and_the_repeated_hour() -> None:
    every = Schedule.parse("0 */30 * * * *")
    assert local(every.latest_at_or_before(at("2026-01-01T10:29:59"), UTC)) == (
        "2026-01-01T10:00:00+00:00"
    )
    assert local(every.latest_at_or_before(at("2026-01-01T10:30:00"), UTC)) == (
        "2026-01-01T10:30:00+00:00"
    )
    # 02:15 CET comes after 02:30 CEST, which fired; 02:00-02:59 CET fire nothing
    second_pass = at("2026-10-25T01:15:00")  # UTC, = 02:15 CET
    assert local(every.latest_at_or_before(second_pass, PARIS), PARIS) == (
        "2026-10-25T02:30:00+02:00"
    )
    assert local(every.next_after(second_pass, PARIS), PARIS) == "2026-10-25T03:00:00+01:00"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("* * * *", "needs 5 fields (minute hour day-of-month month day-of-week) or 6"),
        ("* * * * * * *", "needs 5 fields (minute hour day-of-month month day-of-week) or 6 (sec"),
        ("60 * * * *", "minute 60 is out of range 0-59"),
        ("* 24 * * *", "hour 24 is out of range 0-23"),
        ("61 * * * * *", "second 61 is out of range 0-59"),
        ("* * 0 * *", "day of month 0 is out of range 1-31"),
        ("* * * 13 *", "month 13 is out of range 1-12"),
        ("* * * * 8", "day of week 8 is out of range 0-7"),
        ("*/0 * * * *", "minute step '0' must be a whole number above 0"),
        ("*/x * * * *", "minute step 'x' must be a whole number above 0"),
        ("5-2 * * * *", "minute range '5-2' goes backwards"),
        ("* * * foo *", "month 'foo' is not a number or a name"),
        ("mon * * * *", "minute 'mon' is not a number"),
        ("1,,2 * * * *", "minute '' is not a number"),
        ("0 0 30 2 *", "'0 0 30 2 *' never fires (no such day)"),
    ],
)
def test_bad_schedules_are_refused_precisely(schedule: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Schedule.parse(schedule)


# -- settings ------------------------------------------------------------------------------------

GOOD = '[[cron]]\nschedule = "*/5 * * * *"\n[cron.job]\ntype = "FiveJob"\n'


def load(tmp_path: Path, text: str) -> Any:
    toml = tmp_path / "hopper.toml"
    toml.write_text(text)
    return load_config(parser().parse_args(["run", "--config", str(toml)]), {})


def test_enterprise_format_is_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        'bind = "127.0.0.1:1111"\n' + GOOD + '[[cron]]\nschedule = "0 30 9 * * mon-fri"\n'
        'timezone = "Europe/Paris"\n[cron.job]\ntype = "Report"\nqueue = "critical"\n'
        'args = [1, "a"]\nretry = 3\nreserve_for = 600\n[cron.job.custom]\nexpires_in = 60\n',
    )
    first, second = config.cron
    assert first == CronEntry("*/5 * * * *", CronJob("FiveJob"))
    assert second.timezone == "Europe/Paris" and second.job == CronJob(
        "Report", "critical", [1, "a"], 3, 600, {"expires_in": 60}
    )
    # [[cron]] stays at top level when the settings sit under [hopper]
    assert len(load(tmp_path, '[hopper]\nbind = "127.0.0.1:1"\n' + GOOD).cron) == 1


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('schedule = "61 * * * *"', "cron[1].schedule: minute 61 is out of range 0-59"),
        ('schedule = "* * *"', "cron[1].schedule: needs 5 fields"),
        ('schedule = "* * * * *"\ntimezone = "Mars/Olympus"', "cron[1].timezone: unknown time"),
        ('schedule = "* * * * *"\n[cron.job]\ntype = ""', "cron[1].job.type must not be empty"),
        (
            'schedule = "* * * * *"\n[cron.job]\ntype = "T"\nqueue = "a b"',
            "cron[1].job: cannot get",
        ),
        (
            'schedule = "* * * * *"\n[cron.job]\ntype = "T"\nreserve_for = 90000',
            "cron[1].job: jobs cannot be reserved for more than one day",
        ),
        (
            'schedule = "* * * * *"\n[cron.job]\ntype = "T"\n[cron.job.custom]\nunique_for = -1',
            "cron[1].job: custom.unique_for must be a number of seconds above 0",
        ),
        ('schedule = "*/5 * * * *"\n[cron.job]\ntype = "FiveJob"', "cron[1] repeats cron[0]"),
        (  # 02:30 on the second Sunday of March: the hour New York skips that day
            'schedule = "0 30 2 8-14 3 */7"\ntimezone = "America/New_York"',
            "cron[1].schedule: '0 30 2 8-14 3 */7' never fires in America/New_York",
        ),
        (
            'schedule = "* * * * *"\n[cron.job]\ntype = "T"\n[cron.job.custom]\npriority = 12',
            "cron[1].job: priority must be a whole number from 1 to 9",
        ),
    ],
)
def test_bad_entries_are_refused_naming_the_setting(
    tmp_path: Path, entry: str, message: str
) -> None:
    text = GOOD + "[[cron]]\n" + entry + ("" if "[cron.job]" in entry else '\n[cron.job]\ntype="T"')
    with pytest.raises(ValueError, match=re.escape(message)):
        load(tmp_path, text + "\n")


def test_unknown_and_missing_fields_name_the_entry(tmp_path: Path) -> None:
    with pytest.raises(
        msgspec.ValidationError, match=r"unknown field `tpye` - at `\$.cron\[0\].job`"
    ):
        load(tmp_path, '[[cron]]\nschedule = "* * * * *"\n[cron.job]\ntpye = "T"\n')
    with pytest.raises(
        msgspec.ValidationError, match=r"missing required field `job` - at `\$.cron\[0\]`"
    ):
        load(tmp_path, '[[cron]]\nschedule = "* * * * *"\n')


# -- the loop ------------------------------------------------------------------------------------


def ticks(db: redis.Redis, queue: str = "cron") -> list[int]:
    """The tick of each job a queue holds, read from its jid (`<entry id>-<tick>-<salt>`)."""
    return sorted(int(jid.split("-")[1]) for jid in db.hkeys(QueueKeys(queue).jobs))


# in-process brokers: as on one Redis, in split mode, and on the cluster rig (conftest.py)
IN_EVERY_MODE = pytest.mark.usefixtures("store_mode")
ON_CLUSTER = pytest.mark.on_cluster


def claims_key(store_mode: str) -> str:
    """Where the tick claims of entries whose jobs go to the `cron` queue are kept."""
    return CRON if store_mode == "one" else QueueKeys("cron").cron


def redis_now(db: redis.Redis) -> float:
    seconds, micros = db.time()
    return float(seconds + micros / 1e6)


@IN_EVERY_MODE
@ON_CLUSTER
async def test_every_second_entry_enqueues_each_second(
    start_broker: StartBroker, rdb: redis.Redis
) -> None:
    started = redis_now(rdb)
    await start_broker(cron=(EVERY_SECOND,))
    await eventually(lambda: len(ticks(rdb)) >= 3, timeout=6)
    found = ticks(rdb)
    assert found == list(range(found[0], found[0] + len(found)))
    assert found[0] > started  # an entry never seen starts with its next tick
    payload = json.loads(rdb.hget(QueueKeys("cron").jobs, rdb.hkeys(QueueKeys("cron").jobs)[0]))
    assert payload["jobtype"] == "Tick" and payload["args"] == [] and payload["retry"] == 25
    assert 0 <= parse_time(payload["created_at"]) - int(payload["jid"].split("-")[1]) < LATE


@IN_EVERY_MODE
@ON_CLUSTER
async def test_missed_ticks_get_one_catch_up_job(
    start_broker: StartBroker, rdb: redis.Redis, store_mode: str
) -> None:
    entry_id = compile_entry(EVERY_SECOND, "cron[0]").id
    now = int(redis_now(rdb))
    missed = float(now - 365 * 86_400)  # a year missed while no broker ran
    rdb.hset(claims_key(store_mode), entry_id, missed)
    await start_broker(cron=(EVERY_SECOND,))
    await eventually(lambda: len(ticks(rdb)) >= 3, timeout=6)
    catch_up, *rest = ticks(rdb)
    assert now - LATE - 1 <= catch_up <= now - LATE + 1  # the most recent missed tick
    assert rest == list(range(catch_up + 1, catch_up + 1 + len(rest)))  # then each tick


async def test_a_tick_not_yet_on_its_replica_is_logged_as_stored(
    start_broker: StartBroker, rdb: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A tick's job stored, but not on the replicas push_replicas asks for, counts as pushed
    (not pushed again, not said to be skipped), and the log says so."""
    with caplog.at_level(logging.WARNING, logger="hopper_broker.crontab"):
        await start_broker(cron=(EVERY_SECOND,), push_replicas=1, push_replicas_timeout=0.05)
        await eventually(lambda: len(ticks(rdb)) >= 2, timeout=6)
    assert "stored, but copied to 0 of 1 Redis replicas" in caplog.text
    assert "skipped" not in caplog.text
    found = ticks(rdb)
    assert found == list(range(found[0], found[0] + len(found)))  # each tick once


@IN_EVERY_MODE
@ON_CLUSTER
async def test_a_tick_is_claimed_once(broker: App, rdb: redis.Redis) -> None:
    """The push script's claim: of concurrent pushes of one tick exactly one lands, and an
    earlier tick is refused once a later one was pushed."""
    manager = broker.manager
    assert manager is not None
    periodic = compile_entry(EVERY_SECOND, "cron[0]")
    now = redis_now(rdb)
    outcomes: list[Any] = []

    async def push(tick: float, salt: str) -> None:
        job = periodic.job(tick, now, salt)
        outcomes.extend(await manager.push_many([job], now, (periodic.id, tick)))

    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(push, 1000.0, f"s{i:07d}")
    assert [o.code if o else None for o in outcomes].count(None) == 1
    assert {o.code for o in outcomes if o} == {"CLAIMED"}
    await push(999.0, "late0000")
    assert outcomes[-1] is not None and outcomes[-1].code == "CLAIMED"
    await push(1001.0, "next0000")
    assert outcomes[-1] is None and ticks(rdb) == [1000, 1001]


@IN_EVERY_MODE
@ON_CLUSTER
async def test_unique_jobs_skip_ticks(
    start_broker: StartBroker, rdb: redis.Redis, store_mode: str
) -> None:
    unique = CronEntry("* * * * * *", CronJob("Tick", queue="cron", custom={"unique_for": 60}))
    entry_id = compile_entry(unique, "cron[0]").id
    await start_broker(cron=(unique,))
    first = (await eventually(lambda: ticks(rdb), timeout=5))[0]
    claims = claims_key(store_mode)
    await eventually(lambda: float(rdb.hget(claims, entry_id) or 0) >= first + 2, timeout=5)
    assert ticks(rdb) == [first]


@IN_EVERY_MODE
@ON_CLUSTER
async def test_cron_list_and_reload(start_broker: StartBroker, rdb: redis.Redis) -> None:
    broker: App = await start_broker(cron=(EVERY_SECOND,))
    wire = await Wire.open(broker.port, hello={})
    await eventually(lambda: ticks(rdb), timeout=5)
    (listed,) = json.loads(await wire.call("CRON", "LIST"))
    assert listed["schedule"] == "* * * * * *" and listed["timezone"] == "UTC"
    assert (listed["type"], listed["queue"]) == ("Tick", "cron")
    now = redis_now(rdb)
    assert now < parse_time(listed["next_at"]) <= now + 1
    assert parse_time(listed["last_at"]) in {float(t) for t in ticks(rdb)}
    daily = CronEntry("0 30 9 * * *", CronJob("Daily"), timezone="America/New_York")
    broker.reload(msgspec.structs.replace(broker.settings(), cron=(daily,)))
    (listed,) = json.loads(await wire.call("CRON", "LIST"))
    assert listed["type"] == "Daily" and listed["last_at"] is None
    assert listed["next_at"].endswith(":30:00Z")  # 09:30 in New York: 13:30 or 14:30 UTC
    with pytest.raises(Exception, match="CRON needs LIST"):
        await wire.call("CRON", "NEXT")


@IN_EVERY_MODE
@ON_CLUSTER
async def test_an_entry_added_back_by_a_reload_starts_with_its_next_tick(
    start_broker: StartBroker, rdb: redis.Redis, store_mode: str
) -> None:
    """Ticks missed while an entry was out of the file are not owed when a reload adds it back
    (its claim, from before it was removed a year ago, is still in Redis)."""
    broker: App = await start_broker(cron=())
    assert json.loads(await (await Wire.open(broker.port, hello={})).call("CRON", "LIST")) == []
    entry_id = compile_entry(EVERY_SECOND, "cron[0]").id
    rdb.hset(claims_key(store_mode), entry_id, float(int(redis_now(rdb)) - 365 * 86_400))
    added = redis_now(rdb)
    broker.reload(msgspec.structs.replace(broker.settings(), cron=(EVERY_SECOND,)))
    await eventually(lambda: len(ticks(rdb)) >= 2, timeout=6)
    assert min(ticks(rdb)) > added - 1  # its next tick: no catch-up of the missed ones


# -- several brokers, restarts, SIGHUP -----------------------------------------------------------

TICK_TOML = '[[cron]]\nschedule = "* * * * * *"\n[cron.job]\ntype = "Tick"\nqueue = "cron"\n'


def wait_until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise AssertionError("condition not reached")


@pytest.mark.slow
def test_each_tick_once_with_three_brokers_and_a_restart(
    broker_process: Callable[..., BrokerProcess],
    rdb: redis.Redis,
    store_url: str,
    tmp_path: Path,
) -> None:
    toml = tmp_path / "hopper.toml"
    toml.write_text(TICK_TOML)
    brokers = [broker_process("--config", str(toml)) for _ in range(3)]
    first = wait_until(lambda: ticks(rdb))[0]
    wait_until(lambda: ticks(rdb)[-1] >= first + 3)
    brokers[1].kill()  # SIGKILL mid-way: whatever it was doing, nothing is pushed twice
    killed_at = ticks(rdb)[-1]
    wait_until(lambda: ticks(rdb)[-1] >= killed_at + 2)
    brokers[1].start()
    restarted_at = ticks(rdb)[-1]
    wait_until(lambda: ticks(rdb)[-1] >= restarted_at + 3)
    for broker in brokers:
        assert broker.stop() == 0
    found = ticks(rdb)
    assert found == list(range(first, found[-1] + 1)), found  # every tick, each exactly once
    assert float(rdb.hget(CRON, next(iter(rdb.hkeys(CRON))))) == found[-1]
    check_store(store_url)


@pytest.mark.slow
def test_sighup_adds_an_entry_and_refuses_a_bad_one(
    broker_process: Callable[..., BrokerProcess], rdb: redis.Redis, tmp_path: Path
) -> None:
    toml = tmp_path / "hopper.toml"
    toml.write_text("")
    broker = broker_process("--config", str(toml))
    assert broker.process is not None
    wire = SyncWire(broker.port)
    assert json.loads(wire.call("CRON", "LIST")) == []
    toml.write_text(TICK_TOML)
    broker.process.send_signal(signal.SIGHUP)
    wait_until(lambda: json.loads(wire.call("CRON", "LIST")))
    wait_until(lambda: ticks(rdb))
    toml.write_text(TICK_TOML.replace("* * * * * *", "* * * * * 9"))
    broker.process.send_signal(signal.SIGHUP)
    wait_until(
        lambda: "cron[0].schedule: day of week 9 is out of range 0-7" in broker.log.read_text()
    )
    assert json.loads(wire.call("CRON", "LIST"))[0]["schedule"] == "* * * * * *"
    wire.close()
