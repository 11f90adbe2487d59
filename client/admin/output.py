"""How the admin commands print: aligned tables for people, JSON for scripts, times in UTC."""

import sys
import time
from collections.abc import Sequence
from typing import Any

import msgspec

CELL = 60  # characters of a cell at most (longer ends with …)


def emit_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    """Print rows under headers, columns aligned; `empty` (a line) when there are none."""
    if not rows:
        print(empty)
        return
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= CELL else text[: CELL - 1] + "…"


def when(seconds: float) -> str:
    """Unix seconds as `YYYY-MM-DD HH:MM:SS` UTC."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def stamp(rfc3339: str) -> str:
    """An RFC3339 time from the broker, shortened to the second (`2026-12-01 10:40:00`)."""
    return rfc3339[:19].replace("T", " ") if rfc3339 else ""


def duration(seconds: float) -> str:
    """`1d 2h`, `3h 4m`, `5m 6s`, `7s`."""
    s = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if s >= size:
            return f"{s // size}{unit} {s % size // small_size}{small}"
    return f"{s // 60}m {s % 60}s" if s >= 60 else f"{s}s"
