"""`python -m chaos` (`make chaos`): the whole reliability suite, long runs included, then totals.

Runs the fault, fuzz, limit, security and TLS tests with HOPPER_CHAOS=1 and sums the figures the
runs recorded. Exits non-zero if a test failed, the time budget ran out, or a job was lost.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from typing import Any

from chaos.figures import FIGURES_VARIABLE

SUITE = (
    "test_fault",
    "test_batch_faults",
    "test_job_control_integrity",
    "test_fuzz",
    "test_lanes",
    "test_limits",
    "test_security",
    "test_tls",
    "test_cluster_faults",
)
BUDGET = 14 * 60.0  # seconds for the whole run (the brief: under 15 minutes)
STOP_GRACE = 60.0  # seconds pytest gets to clean up after an interrupt
WORKERS = 2  # pytest-xdist processes: the long runs wait on kills, restarts and reservations
TOTALS = ("pushed", "jobs_moved", "kills", "frames", "connections", "duplicates", "lost")


def run_suite(figures: str) -> int:
    """The suite in WORKERS pytest-xdist processes, then its timing tests alone (as `make
    test` does), both within BUDGET; pytest's exit status (1 when the budget ran out)."""
    files = sorted(f for name in SUITE for f in glob.glob(f"tests/{name}*.py"))
    env = {**os.environ, "HOPPER_CHAOS": "1", FIGURES_VARIABLE: figures}
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=25"]
    deadline = time.monotonic() + BUDGET
    parallel = ["-n", str(WORKERS), "--dist", "loadgroup", "-m", "not timing"]
    for selection in (parallel, ["-m", "timing"]):
        code = _pytest([*base, *selection, *files], env, deadline)
        if code != 0:
            return code
    return 0


def _pytest(command: list[str], env: dict[str, str], deadline: float) -> int:
    pytest = subprocess.Popen(command, env=env)
    try:
        return pytest.wait(max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        print(f"chaos: over the budget of {BUDGET:.0f}s; interrupting")
        pytest.send_signal(signal.SIGINT)  # pytest tears its fixtures down: no process left
        try:
            pytest.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            pytest.kill()
        return 1


def summary(runs: list[dict[str, Any]]) -> Counter[str]:
    totals: Counter[str] = Counter()
    for run in runs:
        for key in TOTALS:
            totals[key] += int(run.get(key, 0))
    return totals


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="hopper-chaos-") as tmp:
        figures = os.path.join(tmp, "figures.jsonl")
        code = run_suite(figures)
        runs = []
        if os.path.exists(figures):
            with open(figures) as f:
                runs = [json.loads(line) for line in f]
    print(f"\n{len(runs)} recorded runs:")
    for run in runs:
        print("  " + " ".join(f"{k}={v}" for k, v in run.items()))
    totals = summary(runs)
    print(" ".join(f"{key}={totals[key]}" for key in TOTALS if key != "lost"))
    print(f"lost={totals['lost']}")
    if code != 0:
        print(f"chaos: the suite failed (pytest exit {code})")
    return 1 if code != 0 or totals["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
