"""One measured figure set, as stored in the results JSON."""

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["ok", "timeout", "failed"]


@dataclass
class Result:
    """One run of one workload on one system (in one mode, at one concurrency)."""

    workload: str
    system: str
    mode: str = ""
    concurrency: int = 0
    batch: int = 1
    jobs: int = 0
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    status: Status = "ok"
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def label(self) -> str:
        return f"{self.system} ({self.mode})" if self.mode else self.system


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def latency_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of latencies given in seconds, in ms rounded to µs."""
    return round(percentile(seconds, 0.50) * 1e3, 3), round(percentile(seconds, 0.99) * 1e3, 3)
