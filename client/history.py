"""The history (Hopper extension): the archive of jobs that reached a final state (done, dead,
discarded, cancelled, expired, replaced), by jid or a page at a time, newest first.

    page = client.history(queue="mail", state="dead", count=100)
    while True:
        for entry in page.jobs:
            print(entry.jid, entry.ended_at, entry.failure)
        if page.cursor is None:
            break
        page = client.history(queue="mail", state="dead", count=100, cursor=page.cursor)
"""

from typing import Any, TypedDict, Unpack

import msgspec

from hopper_client.commands import Call, data
from hopper_client.wire import CRLF, Reply

FinalState = str  # done, dead, discarded, cancelled, expired, replaced


class HistoryEntry(msgspec.Struct, frozen=True):
    """One archived job: where and how it ended, its figures and the payload it had then (its
    args left out when the broker runs with history_args off)."""

    jid: str
    queue: str
    state: FinalState
    jobtype: str
    ended_at: str
    attempts: int
    job: dict[str, Any]
    run_seconds: float | None = None
    failure: dict[str, Any] | None = None
    result: Any = None


class HistoryPage(msgspec.Struct, frozen=True):
    """A page of archived jobs, newest first; `cursor` asks for the next (None: no more)."""

    jobs: list[HistoryEntry]
    cursor: str | None = None


class _Query(msgspec.Struct, omit_defaults=True):
    jid: str | None = None
    queue: str | None = None
    jobtype: str | None = None
    state: FinalState | list[FinalState] | None = None
    since: float | str | None = None
    until: float | str | None = None
    cursor: str | None = None
    count: int = 50


_page_decoder = msgspec.json.Decoder(HistoryPage)


class HistoryFilters(TypedDict, total=False):
    """What a HISTORY page is filtered by: queue, jobtype, final state(s), time range
    (`since`/`until`: unix seconds or RFC 3339), page size (`count`, 1-1000, default 50) and
    the previous page's `cursor`."""

    queue: str
    jobtype: str
    state: FinalState | list[FinalState]
    since: float | str
    until: float | str
    count: int
    cursor: str


def history(jid: str | None = None, **filters: Unpack[HistoryFilters]) -> Call[HistoryPage]:
    """HISTORY: the entries of `jid` (every queue), or a page filtered by `filters`."""
    query = msgspec.convert({"jid": jid, **filters}, _Query)
    return Call(b"HISTORY " + msgspec.json.encode(query) + CRLF, _page)


def _page(reply: Reply, resent: bool) -> HistoryPage:
    return _page_decoder.decode(data(reply))
