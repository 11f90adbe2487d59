"""The admin commands (`hopper info|queues|workers|jobs|job|retry|kill|delete|pause|resume|
drain`): the installed console script against a real broker process."""

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from hopper_client import Client
from tests.admin_cli import hopper, one_line_error
from tests.conftest import BrokerProcess, free_port

pytestmark = [pytest.mark.usefixtures("store_mode"), pytest.mark.on_cluster]

COMMANDS = ("info", "queues", "workers", "quiet", "terminate", "pause", "resume", "drain",
            "jobs", "job", "retry", "kill", "delete")  # fmt: skip


@pytest.fixture
def url(broker_process: Callable[..., BrokerProcess]) -> str:
    return broker_process().url


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url, retry_for=0) as c:
        yield c


def run(url: str, *args: str) -> tuple[int, str]:
    """`hopper ARGS` against the broker (HOPPER_URL): (status, stdout); no stderr on success."""
    done = hopper(*args, HOPPER_URL=url)
    assert "Traceback" not in done.stderr
    return done.returncode, done.stdout


def as_json(url: str, *args: str) -> object:
    status, out = run(url, *args) if "--json" in args else run(url, *args, "--json")
    assert status == 0, out
    return json.loads(out)


def failing(client: Client, url: str, count: int, jobtype: str, message: str) -> list[str]:
    """`count` jobs that failed once and wait in the retries set."""
    jids = [client.push(jobtype, [i], queue="work", retry=5) for i in range(count)]
    with Client(url, wid=f"w-{jobtype}") as worker:
        for _ in jids:
            job = worker.fetch("work")
            assert job is not None
            worker.fail(job.jid, "IOError", message, [])
    return jids


def test_info_and_queues(url: str, client: Client) -> None:
    client.push("Mail", [], queue="mail")
    client.push("Mail", [], queue="other")
    status, out = run(url, "info")
    assert status == 0 and "jobs: 2 waiting in 2 queues" in out
    info = as_json(url, "info")
    assert isinstance(info, dict) and info["faktory"]["total_enqueued"] == 2
    assert run(url, "pause", "mail") == (0, "paused: mail\n")
    queues = as_json(url, "queues")
    assert isinstance(queues, list)
    assert [(q["queue"], q["size"], q["paused"]) for q in queues] == [
        ("mail", 1, True),
        ("other", 1, False),
    ]
    status, out = run(url, "queues")
    assert status == 0 and out.splitlines()[0].split() == [
        "QUEUE", "SIZE", "LATENCY", "PAUSED", "DRAINING", "LIMITS"
    ]  # fmt: skip
    one_line_error(hopper("pause", "nope", "other", HOPPER_URL=url), 1, "no queue nope")
    assert client.info()["hopper"]["paused"] == ["mail", "other"]
    assert run(url, "resume", "*")[0] == 0
    assert client.info()["hopper"]["paused"] == []


def test_drain(url: str, client: Client) -> None:
    client.push("Mail", [], queue="mail")
    assert run(url, "drain", "mail") == (0, "draining: mail\n")
    assert client.info()["hopper"]["draining_queues"] == ["mail"]
    assert run(url, "drain", "mail", "--off")[0] == 0
    assert run(url, "drain")[0] == 0 and client.info()["hopper"]["draining"] is True
    assert run(url, "drain", "--off")[0] == 0 and client.info()["hopper"]["draining"] is False


def test_jobs_pages_and_filters(url: str, client: Client) -> None:
    jids = [
        client.push("Mail" if i % 2 else "Report", [i], at=timedelta(hours=1, seconds=i))
        for i in range(25)
    ]
    page = as_json(url, "jobs", "scheduled", "--limit", "10")
    assert isinstance(page, dict)
    assert [entry["jid"] for entry in page["jobs"]] == jids[:10] and page["cursor"]
    rest = as_json(url, "jobs", "scheduled", "--limit", "100", "--cursor", page["cursor"])
    assert isinstance(rest, dict)
    assert [entry["jid"] for entry in rest["jobs"]] == jids[10:] and rest["cursor"] is None
    mail = as_json(url, "jobs", "scheduled", "--jobtype", "Mail", "--limit", "100")
    assert isinstance(mail, dict) and [e["jid"] for e in mail["jobs"]] == jids[1::2]
    status, out = run(url, "jobs", "scheduled", "--limit", "3")
    assert status == 0 and len(out.splitlines()) == 5 and out.splitlines()[-1].startswith("more:")
    status, out = run(url, "jobs", "dead")
    assert (status, out) == (1, "no dead jobs matched\n")


def test_job_by_jid(url: str, client: Client) -> None:
    jid = client.push("Mail", ["x"])
    state = as_json(url, "job", "--json", "--", jid)  # `--`: a jid may start with -
    assert isinstance(state, dict) and state["state"] == "queued" and state["jobtype"] == "Mail"
    status, out = run(url, "job", "--", jid)
    assert status == 0 and "state: queued" in out
    one_line_error(hopper("job", "no-such-jid", HOPPER_URL=url), 1, "no job no-such-jid")
    dashed = client.push("Mail", [], jid="-dashed-jid-1")
    assert run(url, "job", "--", dashed)[0] == 0
    one_line_error(hopper("job", dashed, HOPPER_URL=url), 2, "a value starting with - goes after")
    line = one_line_error(hopper("retry", dashed, HOPPER_URL=url), 2, f"unknown argument {dashed}")
    assert f"goes after --: hopper retry ... -- {dashed}" in line


def test_retry_kill_delete(url: str, client: Client) -> None:
    disk = failing(client, url, 4, "Disk", "disk full")
    net = failing(client, url, 3, "Net", "connection reset")
    assert run(url, "retry", "--", disk[0]) == (0, "retried 1 job\n")
    assert client.state(disk[0]).state == "queued"
    assert run(url, "kill", "--in", "retries", "--error", "RESET") == (0, "killed 3 jobs\n")
    assert {client.state(jid).state for jid in net} == {"dead"}
    before = as_json(url, "jobs", "dead")
    one_line_error(hopper("kill", "--in", "dead", "--all", HOPPER_URL=url), 2, "invalid choice")
    one_line_error(hopper("kill", "--", net[0], HOPPER_URL=url), 1, "in retries or scheduled")
    assert as_json(url, "jobs", "dead") == before  # killing dead jobs is refused, not done
    done = hopper("delete", "--", disk[1], "missing-jid-1", HOPPER_URL=url)
    assert done.stdout == "deleted 1 job\n"
    one_line_error(done, 1, "no job missing-jid-1 in retries, scheduled or dead")
    assert client.state(disk[1]).state == "unknown"
    result = as_json(url, "delete", "--in", "dead", "--all")
    assert result == {"action": "delete", "count": 3, "missing": []}
    assert run(url, "retry", "--in", "retries", "--jobtype", "Nothing") == (1, "retried 0 jobs\n")
    one_line_error(hopper("retry", HOPPER_URL=url), 2, "give jids, or --in SET")


def test_workers(url: str, client: Client) -> None:
    assert run(url, "workers") == (0, "no workers connected\n")
    jid = client.push("Mail", [])
    with Client(url, wid="w-cli") as worker:
        assert worker.fetch("default") is not None
        workers = as_json(url, "workers")
        assert isinstance(workers, dict) and workers["total"] == 1
        (shown,) = workers["listed"]
        assert shown["wid"] == "w-cli" and [job["jid"] for job in shown["jobs"]] == [jid]
        status, out = run(url, "workers")
        assert status == 0 and "w-cli" in out and jid in out
        assert run(url, "quiet", "w-cli") == (0, "w-cli: quiet\n")
        assert worker.beat() == "quiet"
        assert as_json(url, "terminate", "--all") == {"states": {"w-cli": "terminate"},
                                                      "missing": []}  # fmt: skip
        assert worker.beat() == "terminate"
        assert run(url, "quiet", "w-cli") == (0, "w-cli: terminate\n")  # never backwards
    one_line_error(hopper("quiet", "w-gone", HOPPER_URL=url), 1, "no worker w-gone")
    one_line_error(hopper("quiet", HOPPER_URL=url), 2, "give worker ids or --all")


def test_broker_down_bad_url_and_password(broker_process: Callable[..., BrokerProcess]) -> None:
    down = f"tcp://127.0.0.1:{free_port()}"
    for command in (("info",), ("jobs", "retries"), ("retry", "some-jid-1")):
        one_line_error(hopper(*command, HOPPER_URL=down), 3, "cannot reach the broker at")
    one_line_error(hopper("info", "--url", "http://x"), 2, "unsupported broker URL")
    guarded = broker_process("--password", "s3cret")
    one_line_error(hopper("info", "--url", guarded.url), 3, "requires a password")
    wrong = f"tcp://:wrong@127.0.0.1:{guarded.port}"
    one_line_error(hopper("info", "--url", wrong), 3, "refused: Invalid password")
    assert hopper("info", FAKTORY_URL=f"tcp://:s3cret@127.0.0.1:{guarded.port}").returncode == 0


def test_usage_errors_are_one_line() -> None:
    line = one_line_error(hopper("jobs", "retries", "--jobtipe", "x"), 2, "unknown argument")
    assert "did you mean --jobtype?" in line
    one_line_error(hopper("jobs", "retired"), 2, "invalid choice: 'retired'")
    one_line_error(hopper("jobs", "dead", "--limit", "0"), 2, "not a number from 1")
    one_line_error(hopper("frobnicate"), 2, "invalid choice: 'frobnicate'")


def test_help_everywhere() -> None:
    for command in COMMANDS:
        done = hopper(command, "--help")
        assert done.returncode == 0 and done.stdout.startswith(f"usage: hopper {command}")
        assert "--url" in done.stdout and "--json" in done.stdout
    listed = hopper("--help").stdout
    assert all(re.search(rf"^    {command}\b", listed, re.MULTILINE) for command in COMMANDS)


def test_admin_commands_take_the_url_list_every_client_takes(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    """docs/operations.md: without --url the commands read HOPPER_URL "as every client"; the
    client takes a comma-separated list of brokers sharing one Redis (docs/client.md)."""
    first, second = broker_process(), broker_process()
    listed = f"{first.url},{second.url}"
    done = hopper("info", HOPPER_URL=listed)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "jobs: 0 waiting" in done.stdout


def test_an_untrusted_tls_certificate_is_one_line_not_a_traceback(
    broker_process: Callable[..., BrokerProcess], certificate: tuple[Path, Path]
) -> None:
    """A tcp+tls:// broker whose certificate the system does not trust (self-signed, wrong
    CA, wrong host name): 'Every error is one line on stderr (never a traceback)', status 3
    (the broker cannot be reached)."""
    cert, key = certificate
    broker = broker_process("--tls-cert", str(cert), "--tls-key", str(key))
    done = hopper("info", "--url", f"tcp+tls://127.0.0.1:{broker.port}")
    one_line_error(done, 3, "certificate")


@pytest.fixture
def banner_server() -> Iterator[int]:
    """A TCP service that greets first with a non-Faktory banner (as sshd or an SMTP server
    does); its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    listener.close()


def test_a_url_pointing_at_another_service_is_one_line_not_a_traceback(
    banner_server: int,
) -> None:
    """A mistyped port reaching some other service: one line, status 3, no traceback."""
    done = hopper("info", "--url", f"tcp://127.0.0.1:{banner_server}", "--timeout", "3")
    one_line_error(done, 3, "127.0.0.1")


def test_terminate_all_says_which_workers_it_could_not_reach(
    broker_process: Callable[..., BrokerProcess],
) -> None:
    """`hopper terminate --all` with more workers than INFO lists (1,000, those that beat
    last): those are told, and the command says how many were not (status 1), not "done"."""
    broker = broker_process()
    count = 1005
    workers: list[tuple[socket.socket, object]] = []
    try:
        for n in range(count):
            sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
            reader = sock.makefile("rb")
            assert reader.readline().startswith(b"+HI")
            sock.sendall(b"HELLO " + json.dumps({"v": 2, "wid": f"w{n:05d}"}).encode() + b"\r\n")
            assert reader.readline() == b"+OK\r\n"
            workers.append((sock, reader))
        done = hopper("terminate", "--all", "--json", HOPPER_URL=broker.url)
        assert done.returncode == 1, done.stderr
        assert len(json.loads(done.stdout)["states"]) == 1000
        assert "5 more workers not told (INFO lists 1000): name them" in done.stderr
    finally:
        for sock, _ in workers:
            sock.close()
