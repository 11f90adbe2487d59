"""Pure parts of the client: URLs, job building, backoff, failure descriptions, reply parsing."""

import json
import string
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hopper_client import ConnectionLost, ServerError, make_job, new_jid
from hopper_client.backoff import MAX_DELAY, Backoff
from hopper_client.batches import batch_spec
from hopper_client.commands import (
    batch_commit,
    batch_new,
    batch_open,
    batch_status,
    beat,
    fetch,
    mutate,
    push,
)
from hopper_client.execution import describe
from hopper_client.jobs import format_at, in_batch
from hopper_client.pipeline import PUSHB_JOBS, SEND_LINES, UNREAD_JOBS, Lines
from hopper_client.schema.jobs import parse_time
from hopper_client.url import DEFAULT_URL, Endpoint, env_url, parse_url
from hopper_client.wire import ReplyReader


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://localhost:7419", Endpoint("localhost", 7419)),
        ("tcp://broker", Endpoint("broker", 7419)),
        ("tcp://:pw@10.0.0.1:9000", Endpoint("10.0.0.1", 9000, password="pw")),
        ("tcp://ann:p%40ss@h:1", Endpoint("h", 1, password="p@ss", username="ann")),
        ("tcp+tls://h:7419", Endpoint("h", 7419, tls=True)),
        ("tcp://[::1]:7419", Endpoint("::1", 7419)),
    ],
)
def test_parse_url(url: str, expected: Endpoint) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["http://h:1", "localhost:7419", "tcp://h:notaport"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        parse_url(url)


def test_explicit_password_wins_and_repr_hides_it() -> None:
    endpoint = parse_url("tcp://:from-url@h:1", password="explicit")
    assert endpoint.password == "explicit"
    assert "explicit" not in repr(endpoint) and "***" in repr(endpoint)


def test_environment_precedence() -> None:
    assert env_url({}) == DEFAULT_URL
    assert env_url({"FAKTORY_URL": "tcp://f:1"}) == "tcp://f:1"
    both = {"FAKTORY_URL": "tcp://f:1", "HOPPER_URL": "tcp://h:1"}
    assert env_url(both) == "tcp://h:1"
    provider = {"FAKTORY_PROVIDER": "MY_URL", "MY_URL": "tcp://m:1", "FAKTORY_URL": "tcp://f:1"}
    assert env_url(provider) == "tcp://m:1"


def test_jids_are_random_url_safe_and_long_enough() -> None:
    jids = {new_jid() for _ in range(1000)}
    assert len(jids) == 1000
    allowed = set(string.ascii_letters + string.digits + "-_")
    assert all(len(jid) >= 16 and set(jid) <= allowed for jid in jids)


def test_at_from_datetime_delay_or_text() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, 250000, tzinfo=UTC)
    assert format_at(moment) == "2030-01-02T03:04:05.25Z"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert format_at(plus_two) == "2030-01-02T03:04:05.25Z"
    assert parse_time(format_at(timedelta(seconds=90), now=1000.0)) == 1090.0
    assert format_at("2030-01-02T03:04:05Z") == "2030-01-02T03:04:05Z"
    assert format_at(None) == ""


def test_make_job_fills_only_what_was_given() -> None:
    job = make_job("work", (1, "a"), queue="q", retry=0, custom={"x": 1})
    assert (job.jobtype, job.args, job.queue, job.retry, job.custom) == (
        "work",
        [1, "a"],
        "q",
        0,
        {"x": 1},
    )
    line = push(job).line
    assert line.startswith(b'PUSH {"retry":0,"jid":') and line.endswith(
        b',"custom":{"x":1},"args":[1,"a"]}\r\n'
    )
    assert set(json.loads(line[5:])) == {"retry", "jid", "queue", "jobtype", "custom", "args"}
    assert make_job("work").retry is None and make_job("work").reserve_for == 0
    with pytest.raises(TypeError, match="not a string"):
        make_job("work", "abc")


def test_backoff_grows_to_a_cap_then_gives_up() -> None:
    now = [0.0]
    backoff = Backoff(10.0, clock=lambda: now[0])
    error = ConnectionLost("down")
    delays = []
    with pytest.raises(ConnectionLost):
        for _ in range(100):
            delays.append(backoff.delay(error))
            now[0] += delays[-1]
    assert delays[0] == 0.0 and max(delays) <= MAX_DELAY and 10.0 - MAX_DELAY < now[0] <= 10.0
    backoff.reset()
    assert backoff.delay(error) == 0.0
    assert Backoff(0.0).delay(error) == 0.0  # one immediate retry is always allowed


def test_describe_an_exception() -> None:
    def explode() -> None:
        raise KeyError("missing")

    try:
        explode()
    except KeyError as exc:
        errtype, message, backtrace = describe(exc)
    assert (errtype, message) == ("KeyError", "'missing'")
    assert backtrace[0].startswith("Traceback") and "in explode" in "\n".join(backtrace)


def test_reply_parsing() -> None:
    reader = ReplyReader()
    reader.feed(b'+OK\r\n$17\r\n{"state":"quiet"}\r\n-NOTUNIQUE job is not unique\r\n$-1\r\n')
    call = beat("wid-1")
    assert call.parse(reader.next_reply(), False) == "running"
    assert call.parse(reader.next_reply(), False) == "quiet"
    error = reader.next_reply()
    assert isinstance(error, ServerError) and error.code == "NOTUNIQUE"
    assert fetch(["a", "b"]).line == b"FETCH a b\r\n"
    assert fetch(["a"]).parse(reader.next_reply(), False) is None
    assert reader.next_reply() is False
    reader.feed(b"-ERR shutdown in progress\r\n")
    with pytest.raises(ConnectionLost):
        reader.next_reply()


def test_mutate_line_has_no_spaces() -> None:
    line = mutate("kill", "retries", jids=["j1"], jobtype="x").line
    assert line.startswith(b"MUTATE {") and line.count(b" ") == 1
    assert b'"filter":null' in mutate("clear", "dead").line


def test_pipeline_lines_write_in_batches_and_read_before_replies_could_pile_up() -> None:
    lines = Lines()
    due = [lines.add_job(make_job("work", jid=f"job-{n:05}")) for n in range(SEND_LINES)]
    assert due == [False] * (SEND_LINES - 1) + [True]
    assert lines.take().count(b"\n") == SEND_LINES and lines.take() == b""
    assert not lines.must_read(False) and lines.must_read(True)
    for n in range(SEND_LINES, 3 * SEND_LINES):
        lines.add_job(make_job("work", jid=f"job-{n:05}"))
    lines.take()
    assert lines.must_read(False)  # more than UNREAD_JOBS replies wait
    reads = 0
    while lines.must_read(False):
        lines.settle(b"OK")
        reads += 1
    assert reads == 3 * SEND_LINES - UNREAD_JOBS
    assert lines.rewind().count(b"\n") == UNREAD_JOBS  # after a lost connection
    lines.settle(ServerError("ERR", "jid job-00100 is already in use"))  # resent: pushed
    lines.settle(ServerError("ERR", "jid job-00101 is already in use"))
    while lines.must_read(True):
        lines.settle(b"OK")
    assert lines.idle and lines.refused == {}
    jobs = [make_job("work") for _ in range(PUSHB_JOBS + 1)]
    assert list(lines.add_jobs(jobs)) == []  # two PUSHB lines, not yet enough to write
    assert lines.take().startswith(b"PUSHB [") and lines.must_read(False)  # read before more
    lines.settle(b"{}")
    lines.settle(b'{"x": "jid x is already in use"}')  # not resent: a refusal
    assert lines.refused == {"x": "jid x is already in use"}


def test_batch_lines_and_replies() -> None:
    done = make_job("Done", [1], jid="cb-000001", queue="cbs")
    call = batch_new(batch_spec("import", success=done, parent_bid="b-PPPPPPPPPPPPPP"))
    verb, _, payload = call.line.rstrip(b"\r\n").partition(b" {")
    assert verb == b"BATCH NEW" and call.line.endswith(b"\r\n")
    sent = json.loads(b"{" + payload)
    assert sent == {
        "parent_bid": "b-PPPPPPPPPPPPPP",
        "description": "import",
        "success": {"jid": "cb-000001", "queue": "cbs", "jobtype": "Done", "args": [1]},
    }
    assert call.parse(b"b-AAAAAAAAAAAAAA", False) == "b-AAAAAAAAAAAAAA"
    with pytest.raises(ServerError, match="No such batch"):
        batch_open("b-x").parse(ServerError("ERR", "No such batch b-x"), False)
    assert batch_open("b-x").line == b"BATCH OPEN b-x\r\n"
    assert batch_commit("b-x").parse(b"OK", True) is None
    found = batch_status("b-x").parse(
        b'{"bid":"b-x","created_at":"2026-01-01T00:00:00.000000Z","total":2,"pending":1,'
        b'"failed":0,"complete_st":"1","success_st":"","extra":true}',
        False,
    )
    assert (found.parent_bid, found.description, found.total, found.complete_st) == (
        None,
        None,
        2,
        "1",
    )
    with pytest.raises(ValueError, match="callback"):
        batch_spec("nothing")
    with pytest.raises(ValueError, match="not a batch id"):
        batch_commit("")


def test_in_batch_copies_the_job() -> None:
    job = make_job("work", custom={"k": 1})
    member = in_batch(job, "b-x")
    assert member.custom == {"k": 1, "bid": "b-x"} and job.custom == {"k": 1}
    assert in_batch(job, "") is job
