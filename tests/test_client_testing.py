"""Tasks across real processes, and the pytest plugin run by a sample application's own test
suite (tests/sample_app) in a pytest subprocess, against a broker the plugin starts."""

import re
import signal
import subprocess
import sys
from pathlib import Path

from hopper_client import Client
from tests.conftest import BrokerProcess, clean_env, on_rig

SAMPLE = Path(__file__).parent / "sample_app"
PRODUCER = "from shop.tasks import send_welcome; print(send_welcome.push('ada@example.com'))"


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@on_rig
def test_a_producer_process_pushes_and_a_worker_process_runs_with_the_defaults(
    broker_process,  # type: ignore[no-untyped-def]
) -> None:
    broker: BrokerProcess = broker_process()
    worker = subprocess.Popen(
        [sys.executable, "-m", "hopper_client", "shop.tasks:jobs"],
        cwd=SAMPLE,
        env=clean_env(HOPPER_URL=broker.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pushed = run(["-c", PRODUCER], SAMPLE, HOPPER_URL=broker.url)
        assert pushed.returncode == 0, pushed.stderr
        jid = pushed.stdout.strip()
        with Client(broker.url) as client:
            receipt = client.result(jid, timeout=30)
            assert receipt == {"to": "ada@example.com", "queue": "critical", "retry": 5}
            assert client.state(jid).attempts == 1
        wrong = run(["-c", PRODUCER.replace("'ada@example.com'", "")], SAMPLE, HOPPER_URL="x")
        assert wrong.returncode == 1
        assert "TypeError: send_welcome: missing a required argument: 'email'" in wrong.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=30)
    assert worker.returncode == 0, output
    assert f"job send_welcome {jid} done" in output


def test_the_sample_apps_own_suite_runs_with_the_plugin() -> None:
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], SAMPLE)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout


def test_a_missing_registry_is_a_one_line_usage_error(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text("def test_it(hopper_worker):\n    pass\n")
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)], tmp_path)
    assert done.returncode != 0
    assert "set `hopper_tasks = package.module:name` in the pytest ini file" in done.stdout


def test_the_docs_testing_example_runs_as_written(tmp_path: Path) -> None:
    """docs/client.md's tasks.py, pytest.ini and test_tasks.py, copied as they are."""
    docs = (Path(__file__).parent.parent / "docs" / "client.md").read_text()
    blocks = re.findall(r"```(?:python|ini)\n(.*?)```", docs, re.DOTALL)
    for name in ("tasks.py", "test_tasks.py"):
        code = next(block for block in blocks if block.startswith(f'"""{name}:'))
        (tmp_path / name).write_text(code)
    (tmp_path / "pytest.ini").write_text(next(b for b in blocks if b.startswith("[pytest]")))
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout
