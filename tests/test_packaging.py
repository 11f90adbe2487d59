"""Packaging (docs/packaging.md): the two wheels as built, the client working without any of the
broker's server-side dependencies, a broker running from its wheel, and the systemd unit run as
written."""

import configparser
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BrokerProcess, clean_env, free_port, wait_listening

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheels")]  # the wheels built once

ROOT = Path(__file__).parent.parent
UNIT = ROOT / "docs" / "deploy" / "hopper.service"
# What only the broker needs: a client-only install must import and work without any of them.
SERVER_ONLY = ["hopper_broker", "redis", "starlette", "hypercorn", "jinja2", "multipart",
               "prometheus_client"]  # fmt: skip
BUILD_LEFTOVERS = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", ".*")

# Run by the client-only install's interpreter: refuse every server-only import, import every
# module of hopper_client, then push a job and work it through the broker at argv[2].
CLIENT_ONLY = """
import importlib, importlib.abc, pkgutil, sys
BLOCKED = set(sys.argv[3].split(","))

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"server-only module imported: {name}")

sys.meta_path.insert(0, Refuse())
import hopper_client
assert hopper_client.__file__.startswith(sys.argv[1]), hopper_client.__file__
for module in pkgutil.walk_packages(hopper_client.__path__, "hopper_client."):
    if not module.name.endswith("__main__"):
        importlib.import_module(module.name)

from hopper_client import Client, Worker
done = []
client = Client(sys.argv[2])
jid = client.push("Add", [2, 3])
worker = Worker(sys.argv[2], concurrency=1)
worker.register("Add", lambda a, b: (done.append(a + b), worker.terminate()))
worker.run()
assert done == [5], done
print("client-only ok")
"""
# Python without site's processing (no .pth files, so not the checkout's editable install), on
# an installed wheel first, then this interpreter's own site-packages for the dependencies.
SITE = sysconfig.get_paths()["purelib"]


def isolated(target: Path, code: str) -> list[str]:
    """The command that runs `code` on the wheel installed in `target`."""
    path = f"import sys; sys.path[:0] = [{str(target)!r}, {SITE!r}]"
    return [sys.executable, "-I", "-S", "-c", f"{path}\n{code}"]


def build(source: Path, out: Path, scratch: Path) -> Path:
    """The wheel `pip wheel` makes of a copy of `source` (no build leftovers in the checkout)."""
    copy = scratch / source.name
    if source == ROOT:
        copy.mkdir()
        for part in ("broker", "client"):
            shutil.copytree(ROOT / part, copy / part, ignore=BUILD_LEFTOVERS)
        for part in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / part, copy / part)
    else:
        shutil.copytree(source, copy, ignore=BUILD_LEFTOVERS)
    before = set(out.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(copy)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = set(out.glob("*.whl")) - before
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out, scratch = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("sources")
    return {"broker": build(ROOT, out, scratch), "client": build(ROOT / "client", out, scratch)}


def unpack(wheel: Path, target: Path) -> Path:
    """A wheel installed without its dependencies (they are this interpreter's own)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return target


def test_each_wheel_holds_its_packages_and_metadata(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["client"]) as client:
        names = client.namelist()
        metadata = client.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert {n.split("/")[0] for n in names} == {
        "hopper_client",
        next(n.split("/")[0] for n in names if ".dist-info/" in n),
    }
    assert "hopper_client/py.typed" in names and "hopper_client/schema/jobs.py" in names
    assert "Name: hopper-broker-client" in metadata
    lines = metadata.splitlines()
    requires = [line.split(maxsplit=1)[1] for line in lines if line.startswith("Requires-Dist:")]
    names = {re.match(r"[\w.-]+", r)[0].lower() for r in requires}  # type: ignore[index]
    assert names == {"msgspec", "hiredis", "trio", "httpx", "h11", "opentelemetry-api"}, names
    assert not [r for r in requires if "==" in r.split(";")[0]], requires  # ranges; pins: CI

    with zipfile.ZipFile(wheels["broker"]) as broker:
        names = broker.namelist()
        entry_points = broker.read(next(n for n in names if n.endswith("entry_points.txt")))
    for needed in ("hopper_broker/py.typed", "hopper_broker/store/scripts/fetch.lua",
                   "hopper_broker/web/templates/base.html", "hopper_client/py.typed"):  # fmt: skip
        assert needed in names
    assert not any(n.startswith(("broker/", "client/", "tests/")) for n in names)
    for script in (b"hopper = hopper_broker.__main__:main", b"hopper-worker = hopper_client.cli"):
        assert script in entry_points


def test_the_client_works_without_the_brokers_dependencies(
    wheels: dict[str, Path],
    tmp_path: Path,
    broker_process: Callable[..., BrokerProcess],
) -> None:
    target = unpack(wheels["client"], tmp_path / "site")
    broker = broker_process()
    done = subprocess.run(
        [*isolated(target, CLIENT_ONLY), str(target), broker.url, ",".join(SERVER_ONLY)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "client-only ok" in done.stdout


def test_the_broker_wheel_runs_a_broker(
    wheels: dict[str, Path], tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    target = unpack(wheels["broker"], tmp_path / "site")
    port, log = free_port(), tmp_path / "broker.log"
    main = "from hopper_broker.__main__ import main; sys.argv[0] = 'hopper'; main()"
    command = [*isolated(target, main), "run", "--bind", f"127.0.0.1:{port}",
               "--data-dir", str(tmp_path / "data"), "--processes", "1",
               "--dashboard-bind", "127.0.0.1:0"]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, cwd=tmp_path, env=clean_env())
    processes.append(process)
    wait_listening(port, process, log, timeout=30)
    check = "import hopper_broker, hopper_client; from hopper_client import Client\n"
    check += f"c = Client('tcp://127.0.0.1:{port}'); jid = c.push('Job', [])\n"
    check += "print(c.fetch('default').jid == jid, hopper_broker.__file__, hopper_client.__file__)"
    done = subprocess.run(isolated(target, check), capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)  # fmt: skip
    same, *files = done.stdout.split()
    assert same == "True", done.stderr
    assert all(file.startswith(str(target)) for file in files), files  # the wheel's own code
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, log.read_text()


def unit_service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` (it insists the ExecStart program exists: the project's own)."""
    hopper = Path(sys.executable).parent / "hopper"
    unit = tmp_path / "hopper.service"
    unit.write_text(UNIT.read_text().replace("/opt/hopper/bin/hopper", str(hopper)))
    done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "hopper.service" not in done.stderr, done.stderr  # no warning about our unit


def test_the_units_command_serves_reloads_and_stops(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The unit's ExecStart, Environment, ExecReload and KillSignal as systemd would use them,
    with its paths moved under a temporary prefix (and a free port instead of 7419)."""
    service = unit_service()
    paths = {
        "/opt/hopper/bin/hopper": str(Path(sys.executable).parent / "hopper"),
        "/var/lib/hopper": str(tmp_path / "state"),
        "/etc/hopper": str(tmp_path / "etc"),
    }

    def moved(text: str) -> str:
        for old, new in paths.items():
            text = text.replace(old, new)
        return text

    (tmp_path / "state").mkdir()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hopper.toml").write_text("# settings: docs/operations.md\n")
    port = free_port()
    env = clean_env(HOPPER_BIND=f"127.0.0.1:{port}", HOPPER_DASHBOARD_BIND="127.0.0.1:0")
    for line in service["Environment"].splitlines():
        key, _, value = moved(line).partition("=")
        env[key] = value
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["KillSignal"] == "SIGTERM" and service["Type"] == "exec"
    log = tmp_path / "broker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            moved(service["ExecStart"]).split(), stdout=out, stderr=out,
            cwd=moved(service["WorkingDirectory"]), env=env,
        )  # fmt: skip
    processes.append(process)
    wait_listening(port, process, log, timeout=30)
    assert (tmp_path / "state" / "appendonlydir").is_dir()  # the embedded Redis's AOF, there
    process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(float(service["TimeoutStopSec"])) == 0, log.read_text()
