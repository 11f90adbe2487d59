"""Running the installed `hopper` console script (.venv/bin/hopper) as an operator would."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import clean_env

ROOT = Path(__file__).resolve().parent.parent
HOPPER = Path(sys.executable).parent / "hopper"


def hopper(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`hopper ARGS` with a clean environment plus `env`; this checkout's code first on the path
    (the console script may belong to another checkout's virtualenv)."""
    return subprocess.run(
        [str(HOPPER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(PYTHONPATH=str(ROOT), **env),
    )


def one_line_error(done: subprocess.CompletedProcess[str], status: int, text: str) -> str:
    """Assert the command failed with `status` and one line on stderr containing `text`."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in done.stderr, done.stderr
    return lines[0]
