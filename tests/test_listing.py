"""JOB LIST: pages of the retries, scheduled, dead and working sets, bounded, walked with a
cursor that sees every entry exactly once even while entries move."""

import time
from typing import Any

import msgspec
import pytest

from hopper_broker.app import App
from hopper_broker.listing import Listing
from hopper_client.schema.pages import MAX_LIMIT, SCAN_WINDOW, ListQuery, Page
from tests.wire import Wire, WireError, job

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

QUEUES = ("alpha", "beta", "gamma")


async def fill_scheduled(wire: Wire, count: int, start: int = 0) -> list[str]:
    """`count` scheduled jobs over three queues, each at its own time; jobtype a or b."""
    at = time.time() + 3600
    jids = [f"job-{i:06d}" for i in range(start, start + count)]
    for first in range(0, count, 500):
        batch = [
            job(jid, "a" if i % 2 else "b", queue=QUEUES[i % 3], at=_rfc3339(at + i))
            for i, jid in enumerate(jids[first : first + 500], start=start + first)
        ]
        assert await wire.call("PUSHB", batch) == b"{}"
    return jids


def _rfc3339(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + "Z"


def listing(broker: App) -> Listing:
    assert broker.manager is not None
    return broker.manager.listing


async def walk(broker: App, between: Any = None, **query: Any) -> list[tuple[float, str]]:
    """Every (score, jid) a walk over the pages lists, in order; `between(page)` runs after
    each page. Asserts each page is bounded."""
    listed: list[tuple[float, str]] = []
    cursor = ""
    limit = query.get("limit", 50)
    for _ in range(10_000):
        page = await listing(broker).page(ListQuery(cursor=cursor, **query))
        assert len(page.jobs) <= limit
        assert page.scanned <= max(limit, SCAN_WINDOW)
        listed += [(entry.score, entry.jid) for entry in page.jobs]
        if between is not None:
            await between(page)
        if page.cursor is None:
            return listed
        cursor = page.cursor
    raise AssertionError("the walk did not end")


async def test_walks_every_entry_once_in_order(broker: App) -> None:
    wire = await Wire.open(broker.port, hello={})
    jids = await fill_scheduled(wire, 3000)
    listed = await walk(broker, target="scheduled", limit=100)
    assert [jid for _, jid in listed] == jids  # soonest first, across the queues
    newest = await walk(broker, target="scheduled", limit=MAX_LIMIT, order="desc")
    assert [jid for _, jid in newest] == jids[::-1]
    one = await walk(broker, target="scheduled", limit=100, queues=["beta"])
    assert [jid for _, jid in one] == jids[1::3]


async def test_walk_while_entries_move(broker: App) -> None:
    """Entries requeued (gone from the set) and new ones pushed between pages: those there all
    along are listed once each; nothing is listed twice."""
    wire = await Wire.open(broker.port, hello={})
    jids = await fill_scheduled(wire, 2000)
    moved: set[str] = set()
    added: list[str] = []

    async def churn(page: Page) -> None:
        if not page.jobs:
            return
        seen = int(page.jobs[-1].jid.removeprefix("job-"))
        ahead = [f"job-{seen + k:06d}" for k in (3, 40) if seen + k < 2000]
        behind = [f"job-{max(seen - k, 0):06d}" for k in (1, 30)]
        for jid in ahead + behind:
            moved.add(jid)
        await wire.call("MUTATE", {"cmd": "requeue", "target": "scheduled",
                                   "filter": {"jids": ahead + behind}})  # fmt: skip
        added.extend(await fill_scheduled(wire, 2, start=10_000 + len(added)))

    listed = [jid for _, jid in await walk(broker, churn, target="scheduled", limit=37)]
    assert len(listed) == len(set(listed))
    stayed = [jid for jid in jids if jid not in moved]
    assert [jid for jid in listed if jid in set(stayed)] == stayed
    assert set(listed) <= set(jids) | set(added)


async def test_ties_are_walked_by_jid(broker: App) -> None:
    """MUTATE kill gives every job the same score: the cursor goes on within the tie."""
    wire = await Wire.open(broker.port, hello={})
    jids = await fill_scheduled(wire, 500)
    await wire.call("MUTATE", {"cmd": "kill", "target": "scheduled"})
    newest = await walk(broker, target="dead", limit=7)  # dead: newest first by default
    assert len({score for score, _ in newest}) == 1  # one kill, one score
    assert sorted(jid for _, jid in newest) == jids and len(newest) == 500
    assert newest == sorted(newest, key=lambda e: (e[0], e[1]), reverse=True)


async def test_filter_scans_a_bounded_window(broker: App) -> None:
    wire = await Wire.open(broker.port, hello={})
    jids = await fill_scheduled(wire, 3000)
    await wire.call("PUSH", job("job-rare", "rare", at=_rfc3339(time.time() + 7200)))
    first = await listing(broker).page(ListQuery(target="scheduled", jobtype="rare"))
    assert first.jobs == [] and first.cursor is not None and first.scanned <= SCAN_WINDOW
    assert [jid for _, jid in await walk(broker, target="scheduled", jobtype="rare")] == [
        "job-rare"
    ]
    assert [jid for _, jid in await walk(broker, target="scheduled", jobtype="a")] == jids[1::2]


async def test_error_filter_and_wire(broker: App) -> None:
    worker = await Wire.open(broker.port, hello={"wid": "w1"})
    for i, message in enumerate(["disk full", "Timeout talking to SMTP", "Disk FULL again"]):
        await worker.call("PUSH", job(f"fail-{i:04d}", "mail", retry=5))
        fetched = await worker.call("FETCH", "default")
        assert fetched
        report = {"jid": f"fail-{i:04d}", "errtype": "IOError", "message": message}
        assert await worker.call("FAIL", report) == b"OK"
    wire = await Wire.open(broker.port, hello={})
    reply = await wire.call("JOB LIST", {"target": "retries", "error": "disk full"})
    page = msgspec.json.decode(reply)
    assert sorted(entry["jid"] for entry in page["jobs"]) == ["fail-0000", "fail-0002"]
    assert page["cursor"] is None and page["jobs"][0]["job"]["failure"]["errtype"] == "IOError"
    by_type = msgspec.json.decode(await wire.call("JOB LIST", {"target": "retries",
                                                               "error": "ioerror"}))  # fmt: skip
    assert len(by_type["jobs"]) == 3


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"target": "nowhere"}, "JOB LIST: target must be one of"),
        ({"target": "dead", "limit": 0}, "JOB LIST: limit must be from 1 to 1000"),
        ({"target": "dead", "order": "up"}, "JOB LIST: order must be asc or desc"),
        ({"target": "dead", "cursor": "x"}, "JOB LIST: not a cursor: x"),
        ({"target": "dead", "cursor": "nan:x"}, "JOB LIST: not a cursor: nan:x"),
        ({"target": "dead", "cursor": "1_0:x"}, "JOB LIST: not a cursor: 1_0:x"),
        ({"target": "dead", "cursor": "١:x"}, "JOB LIST: not a cursor: "),
        ({"target": "dead", "queues": ["a b"]}, 'cannot get "a b" queue'),
        ({"target": "dead", "colour": "red"}, "JOB LIST: Object contains unknown field"),
        ({}, "JOB LIST: Object missing required field `target`"),
    ],
)
async def test_bad_queries(broker: App, query: dict[str, Any], error: str) -> None:
    wire = await Wire.open(broker.port, hello={})
    with pytest.raises(WireError, match=error):
        await wire.call("JOB LIST", query)
    assert (
        await wire.call("JOB LIST", {"target": "dead"}) == b'{"jobs":[],"cursor":null,"scanned":0}'
    )
