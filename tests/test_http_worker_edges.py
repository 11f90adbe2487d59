"""The HTTP worker at its edges: callbacks for jids that are percent-encoded, secrets and
header values that cannot go in a header line, and configurations or command lines that cannot
work (refused in one line, exit 2)."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from hopper_broker.app import App
from hopper_client import AsyncClient
from hopper_client.http import HttpConfig, plan
from hopper_client.http.config import Auth, Callback, ConfigError, Route
from tests.conftest import eventually
from tests.test_http_worker import WAIT, Downstream, route, start
from tests.test_http_worker import client as client
from tests.test_http_worker import downstream as downstream

SECRET = "callback-secret"


async def test_callback_of_a_jid_that_needs_percent_encoding_is_found(
    broker: App, client: AsyncClient, downstream: Downstream, nursery: trio.Nursery
) -> None:
    """docs/http-worker.md: the jid is percent-encoded "if it needs to be" and the downstream
    calls back the URL it was given. The URL given for jid `order#1/2%` is
    `.../jobs/order%231%2F2%25`; the callback endpoint must find the job by it."""
    callback = Callback(listen="127.0.0.1:0", secret=SECRET, extend=30)
    accepted = route(downstream, "/accept", accepted=True)
    worker = await start(nursery, broker, downstream, default=accepted, callback=callback)
    jid = await client.push("render", [1], jid="order#1/2%", retry=0)
    await eventually(lambda: len(downstream.seen("/accept")) == 1)
    [(_, headers, body)] = downstream.seen("/accept")
    url = headers["Hopper-Callback"]
    assert url == body["callback"] == f"{worker.callback_url}/jobs/order%231%2F2%25"
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{url}/done", json={"ok": 1}, headers={"Authorization": f"Bearer {SECRET}"}
        )
    assert answer.status_code == 204
    with trio.fail_after(WAIT):
        assert await client.result(jid) == {"ok": 1}
    worker.terminate()


def test_a_secret_or_header_that_cannot_go_in_a_header_line_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A token read from the environment with a trailing newline (as a secret file often
    has) is refused at start naming the setting, never showing the secret (else the HTTP
    stack's error, which quotes the header, would land in the job's failure and the log)."""
    monkeypatch.setenv("HTTP_TOKEN", "t0p-s3cret\n")
    bearer = Route(url="http://127.0.0.1:1/x", auth=Auth(bearer_env="HTTP_TOKEN"))
    with pytest.raises(ConfigError, match=r"^default\.auth: holds a control") as refused:
        plan(HttpConfig(default=bearer))
    assert "t0p-s3cret" not in str(refused.value)
    header = Route(url="http://127.0.0.1:1/x", headers={"X-Key": "a\r\nb"})
    with pytest.raises(ConfigError, match=r"^routes\.r\.headers\.X-Key: holds a control"):
        plan(HttpConfig(routes={"r": header}))
    callback = Callback(secret="s3cret\n")
    with pytest.raises(ConfigError, match=r"^callback\.secret: holds a control"):
        plan(HttpConfig(default=Route(url="http://127.0.0.1:1/x"), callback=callback))


def write(tmp_path: Path, text: str) -> str:
    file = tmp_path / "http.toml"
    file.write_text(text)
    return str(file)


OK_FILE = '[default]\nurl = "http://127.0.0.1:1/x"\n'


def command(*args: str) -> tuple[int, str]:
    """Run hopper-http-worker (against a broker port nothing listens on); its exit code and
    stderr, or fail the test if it is still running after 10 s (it started working)."""
    exe = str(Path(sys.executable).parent / "hopper-http-worker")
    process = subprocess.Popen(
        [exe, *args, "--url", "tcp://127.0.0.1:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"{args}: the worker started instead of refusing: {err[-300:]}")
    return process.returncode, err


@pytest.mark.parametrize("listen", ["localhost", "127.0.0.1:http", "127.0.0.1:99999"])
def test_cli_bad_callback_listen_is_refused_with_exit_2(tmp_path: Path, listen: str) -> None:
    """A `callback.listen` without a usable port: one line naming the setting, exit 2."""
    text = OK_FILE + f'accepted = true\n[callback]\nlisten = "{listen}"\nsecret = "s"\n'
    code, err = command(write(tmp_path, text))
    assert (code, "Traceback" in err) == (2, False), err
    assert "callback.listen" in err


@pytest.mark.parametrize(
    "flags",
    [
        ["--queues", ","],
        ["--queues", "a b"],
        ["--concurrency", "-1"],
        ["--concurrency", "0"],
        ["--grace", "-3"],
        ["--log-level", "bogus"],
    ],
)
def test_cli_bad_overrides_are_refused_with_exit_2(tmp_path: Path, flags: list[str]) -> None:
    """The command line's overrides get the checks the file's values get: exit 2."""
    code, err = command(write(tmp_path, OK_FILE), *flags)
    assert (code, "Traceback" in err) == (2, False), err


def test_a_nan_timeout_is_refused() -> None:
    """`timeout = nan` (valid TOML) is no number of seconds above 0."""
    with pytest.raises(ConfigError):
        plan(HttpConfig(default=Route(url="http://127.0.0.1:1/x"), timeout=float("nan")))
    with pytest.raises(ConfigError):
        plan(HttpConfig(default=Route(url="http://127.0.0.1:1/x", timeout=float("nan"))))
