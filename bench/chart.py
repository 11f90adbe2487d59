"""The PNG: throughput (enqueue, end to end) and latency per system, Hopper's bars in colour."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.report import measured, one, select
from bench.results import Result
from bench.systems import SYSTEMS, find

HOPPER = ("#d1495b", "#edae49", "#00798c")  # Hopper's bars, one colour per series
PEER = ("#8d8d8d", "#b5b5b5", "#d9d9d9")  # the peers' bars


def bars(
    ax: Axes,
    labels: list[str],
    series: dict[str, list[float]],
    ours: list[bool],
    title: str,
    fmt: str = "{:,.0f}",
) -> None:
    """Grouped horizontal bars, each with its value: one group per label, one bar per series."""
    height = 0.8 / max(1, len(series))
    for i, (legend, values) in enumerate(series.items()):
        ys = [row + i * height for row in range(len(labels))]
        colours = [HOPPER[i % 3] if mine else PEER[i % 3] for mine in ours]
        bar = ax.barh(ys, values, height, color=colours, label=legend)
        ax.bar_label(bar, [fmt.format(v) if v else "" for v in values], fontsize=6, padding=2)
    ax.set_yticks([row + height * (len(series) - 1) / 2 for row in range(len(labels))], labels)
    ax.invert_yaxis()
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def draw(results: Sequence[Result], concurrencies: Sequence[int], path: Path) -> None:
    ok = measured(results)
    fig, (enqueue, end_to_end, latency) = plt.subplots(1, 3, figsize=(18, 7))

    systems = [s for s in SYSTEMS if select(ok, "enqueue", system=s.name)]
    bars(
        enqueue,
        [s.name for s in systems],
        {
            f"batch {b}" if b > 1 else "single": [
                r.jobs_per_s if (r := one(ok, "enqueue", system=s.name, batch=b)) else 0
                for s in systems
            ]
            for b in (1, 100)
        },
        [s.backend == "hopper" for s in systems],
        "Enqueue, one producer (jobs/s)",
    )

    rows = [
        (s, m.name)
        for s in SYSTEMS
        for m in s.modes
        if select(ok, "end_to_end", system=s.name, mode=m.name)
    ]
    bars(
        end_to_end,
        [f"{s.name} ({mode})" for s, mode in rows],
        {
            f"c={c}": [
                r.jobs_per_s
                if (r := one(ok, "end_to_end", system=s.name, mode=mode, concurrency=c))
                else 0
                for s, mode in rows
            ]
            for c in concurrencies
        },
        [s.backend == "hopper" for s, _ in rows],
        "End to end, one worker process (jobs/s)",
    )

    runs = [r for s in SYSTEMS for r in select(ok, "latency", system=s.name)]
    bars(
        latency,
        [r.label() for r in runs],
        {"p50": [r.p50_ms or 0 for r in runs], "p99": [r.p99_ms or 0 for r in runs]},
        [find(r.system).backend == "hopper" for r in runs],
        "Push → start latency at 1,000 jobs/s (ms, log scale)",
        "{:.2f}",
    )
    latency.set_xscale("log")

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
