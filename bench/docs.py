"""docs/benchmarks.md: how the figures are measured, the machine, the command, the tables."""

from datetime import datetime
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.systems import SYSTEMS

# The page's prose, kept beside this file: how the figures are measured (a str.format
# template of the run's sizes) and how to read them (the notes of each issue's measurements).
METHOD = Path(__file__).with_name("method.md").read_text()
READING = Path(__file__).with_name("reading.md").read_text()


def write(
    path: Path,
    tables: str,
    size: dict[str, Any],
    duration: float,
    started: datetime,
    reference: str = "",
) -> None:
    """Rewrite the page; `size` holds the job counts and limits the run used, `reference`
    the reference server's version when the run had one."""
    machine = describe()
    versions = ", ".join(f"{s.name} {s.version}" for s in SYSTEMS if s.backend != "reference")
    command = "make bench"
    if reference:
        versions += f", the reference server: {reference} (`FAKTORY_BIN`)"
        command = "FAKTORY_BIN=<the reference server's binary> make bench"
    path.write_text(
        f"""# Benchmarks

Hopper side by side with the job systems a Python team would pick instead, on one box.
Produced by `make bench` (the harness in `bench/`); raw results in `bench/results/latest.json`.

![throughput and latency per system](benchmarks.png)

- **Command**: `{command}` (`.venv-bench/bin/python -m bench`; `--quick` for a short run)
- **Run**: {started:%Y-%m-%d %H:%M} UTC, {duration / 60:.1f} minutes
- **Machine**: {machine["cpu"]}, {machine["cores"]} cores, {machine["memory"]}, Linux
  {machine["kernel"]}, Python {machine["python"]}, redis-server {machine["redis_server"]}; load
  average {machine["load_average"]} when the tables were written (other work on the box
  shows here)
- **Versions**: {versions} (pinned in `bench/requirements.txt`)

{tables}

{METHOD.format(**size)}
{READING}"""
    )
