"""Tables (Markdown, also printed), Hopper's ratios to the best peer, and the summary line."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.results import Result
from bench.systems import SYSTEMS, System
from bench.workloads import THREADED, fed_by

# The reference Faktory server (Go), shown when a run is not given one (--reference): Faktory
# 1.8.0 built from source, under bench/rawload.py on this machine, 2026-12-02 (jobs/s; server
# + its Redis CPU µs per job).
REFERENCE = {"PUSH": 15_895, "PUSHB": 39_872, "FETCH+ACK": 3_881, "mixed": 2_909}
REFERENCE_CPU_US = {"PUSH": 76.4, "PUSHB": 38.5, "FETCH+ACK": 353.7, "mixed": 453.5}
# Issue 16's bar for a client that waits for each reply, from 10 threads: BullMQ's add and its
# Worker drain 9,000-10,000 jobs/s that way on this machine.
THREADED_BAR = 10_000


def select(results: Iterable[Result], workload: str, **fields: object) -> list[Result]:
    """The runs of a workload whose attributes equal `fields`."""
    return [
        r
        for r in results
        if r.workload == workload and all(getattr(r, k) == v for k, v in fields.items())
    ]


def one(results: Iterable[Result], workload: str, **fields: object) -> Result | None:
    found = select(results, workload, **fields)
    return found[0] if found else None


def measured(results: Iterable[Result]) -> list[Result]:
    """Runs that produced figures (complete, or cut by a timeout)."""
    return [r for r in results if r.status != "failed"]


def peers(results: Iterable[Result]) -> list[Result]:
    names = {s.name for s in SYSTEMS if s.peer}
    return [r for r in measured(results) if r.system in names]


def fastest(results: Iterable[Result]) -> Result | None:
    return max(results, key=lambda r: r.jobs_per_s, default=None)


def quickest(results: Iterable[Result], value: str) -> Result | None:
    """The run with the lowest latency `value` ("p50_ms" or "p99_ms")."""
    timed = [r for r in results if getattr(r, value) is not None]
    return min(timed, key=lambda r: float(getattr(r, value)), default=None)


# -- cells ------------------------------------------------------------------------------------


def jobs_cell(result: Result | None) -> str:
    if result is None:
        return "–"
    if result.status == "failed":
        return "failed"
    return f"{result.jobs_per_s:,.0f}" + ("*" if result.status == "timeout" else "")


def ms_cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def pair(p50: float | None, p99: float | None) -> str:
    return f"{ms_cell(p50)} / {ms_cell(p99)}"


def number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


SERVED_BY = {"redis": "", "hopper": " → Hopper", "reference": " → reference (Go)"}


def name(system: System) -> str:
    return f"{system.name} {system.version}"


# -- the tables -------------------------------------------------------------------------------


def enqueue_table(results: Sequence[Result]) -> str:
    rows = [
        [
            name(s) + SERVED_BY[s.backend],
            jobs_cell(one(results, "enqueue", system=s.name, mode="", batch=1)),
            jobs_cell(one(results, "enqueue", system=s.name, mode="pipeline"))
            if s.pipeline
            else "no API",
            jobs_cell(one(results, "enqueue", system=s.name, batch=100)) if s.batch else "no API",
        ]
        for s in SYSTEMS
        if select(results, "enqueue", system=s.name)
    ]
    headers = ["system", "single jobs/s", "single, pipelined, jobs/s", "batches of 100, jobs/s"]
    return table(headers, rows)


def end_to_end_table(results: Sequence[Result], concurrencies: Sequence[int]) -> str:
    rows = []
    for s in SYSTEMS:
        for mode in s.modes:
            runs = select(results, "end_to_end", system=s.name, mode=mode.name)
            if runs:
                cells = [jobs_cell(one(runs, "end_to_end", concurrency=c)) for c in concurrencies]
                rows.append([name(s), mode.name, *cells])
    return table(["system", "worker mode", *(f"c={c}" for c in concurrencies)], rows)


def latency_table(results: Sequence[Result]) -> str:
    rows = [
        [name(s), r.mode, str(r.concurrency), ms_cell(r.p50_ms), ms_cell(r.p99_ms), status(r)]
        for s in SYSTEMS
        for r in select(results, "latency", system=s.name)
    ]
    return table(["system", "worker mode", "c", "p50 ms", "p99 ms", "status"], rows)


def status(result: Result) -> str:
    return result.status if not result.error else f"{result.status}: {result.error[:80]}"


def raw_table(results: Sequence[Result]) -> str:
    rows = []
    for kind, recorded in REFERENCE.items():
        r = one(results, "raw", mode=kind)
        extra = r.extra if r else {}
        theirs = extra.get("reference_jobs_per_s")
        source = "this run" if theirs else "recorded"
        theirs = theirs or recorded
        their_cpu = extra.get("reference_cpu_us_per_job") or REFERENCE_CPU_US.get(kind)
        ratio = f"{r.jobs_per_s / theirs:.2f}" if r and r.jobs_per_s else "–"
        rows.append(
            [
                kind,
                jobs_cell(r),
                number(extra.get("server_cpu_us_per_job")),
                number(extra.get("load_cpu_us_per_job")),
                f"{theirs:,.0f} ({source})",
                number(their_cpu),
                ratio,
            ]
        )
    header = ["raw protocol, 10 connections", "Hopper jobs/s", "Hopper server CPU µs/job"]
    reference = ["reference (Go) jobs/s", "reference server CPU µs/job", "Hopper ÷ reference"]
    return table([*header, "load loop CPU µs/job", *reference], rows)


def scale_table(results: Sequence[Result]) -> str:
    rows = []
    if (d := one(results, "depth")) is not None:
        rows += [
            [f"{d.jobs:,} queued: push by PUSHB (4 connections)", f"{d.seconds:.1f} s", "s"],
            ["… push rate", number(d.jobs_per_s, 0), "jobs/s"],
            ["… broker RSS", number(d.extra.get("broker_rss_mb")), "MB"],
            ["… Redis used_memory", number(d.extra.get("redis_used_mb")), "MB"],
            ["… Redis RSS", number(d.extra.get("redis_rss_mb")), "MB"],
            ["… FETCH+ACK at depth p50 / p99", pair(d.p50_ms, d.p99_ms), "ms"],
        ]
    if (c := one(results, "connections")) is not None:
        rss, alone = c.extra.get("broker_rss_mb"), c.extra.get("broker_rss_alone_mb")
        rows += [
            [f"{c.concurrency:,} idle connections: broker RSS", number(rss), "MB"],
            ["… broker RSS before they connected", number(alone), "MB"],
            ["… working connection PUSH+FETCH+ACK p50 / p99", pair(c.p50_ms, c.p99_ms), "ms"],
            ["… the same p99 before they connected", ms_cell(c.extra.get("p99_ms_alone")), "ms"],
        ]
    if (i := one(results, "idle")) is not None:
        rows += [
            [
                f"{i.concurrency:,} idle queues: broker + Redis CPU",
                number(i.extra.get("total_pct"), 2),
                "% of a core",
            ],
            ["… of which the broker", number(i.extra.get("broker_pct"), 2), "% of a core"],
            [
                "… a job scheduled 1 s ahead, fetched after",
                number(i.extra.get("scheduled_delay_s"), 2),
                "s",
            ],
        ]
    if (h := one(results, "history")) is not None:
        rows += [
            [
                f"{h.jobs:,} archived jobs: memory per job",
                number(h.extra.get("bytes_per_job"), 0),
                "B",
            ],
            [
                "… without args (history_args off)",
                number(h.extra.get("bytes_per_job_no_args"), 0),
                "B",
            ],
            *(
                [f"… HISTORY {name} p99", number(value, 2), "ms"]
                for key, value in h.extra.items()
                if key.endswith(" p99_ms") and (name := key.removesuffix(" p99_ms"))
            ),
            [
                "… a page followed by cursor",
                number(h.extra.get("cursor walk per page ms"), 2),
                "ms",
            ],
            [
                "… retention: Redis CPU per entry deleted",
                number(h.extra.get("retention µs per deleted"), 1),
                "µs",
            ],
        ]
    scaled = ("depth", "connections", "idle", "history")
    for r in (r for name in scaled for r in select(results, name)):
        if r.status == "failed":
            rows.append([f"{r.workload}: failed", r.error[:80], ""])
    return table(["Hopper at scale", "value", "unit"], rows)


# -- Hopper against the best peer -------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    figure: str
    hopper: Result | None
    peer: Result | None
    value: str  # "jobs_per_s" or "p50_ms"/"p99_ms"

    def get(self, result: Result | None) -> float | None:
        return None if result is None else getattr(result, self.value)

    @property
    def ratio(self) -> float | None:
        hopper, peer = self.get(self.hopper), self.get(self.peer)
        return round(hopper / peer, 2) if hopper is not None and peer else None


def comparisons(results: Sequence[Result]) -> dict[str, Comparison]:
    """Hopper against the best peer, per figure; "end_to_end" is the headline (c=10 against
    the best peer run at any concurrency), "end_to_end_cN" the same concurrency on both sides."""
    ok, best = measured(results), peers(results)
    latency = one(ok, "latency", system="hopper")
    per_concurrency = {
        f"end_to_end_c{c}": Comparison(
            f"end to end c={c}, Hopper client async vs best peer at c={c}",
            one(ok, "end_to_end", system="hopper", mode="async", concurrency=c),
            fastest(select(best, "end_to_end", concurrency=c)),
            "jobs_per_s",
        )
        for c in sorted({r.concurrency for r in select(ok, "end_to_end")})
    }
    return {
        "end_to_end": Comparison(
            "end to end, Hopper client async c=10 vs best peer run",
            one(ok, "end_to_end", system="hopper", mode="async", concurrency=10),
            fastest(select(best, "end_to_end")),
            "jobs_per_s",
        ),
        **per_concurrency,
        "enqueue": Comparison(
            "enqueue, single jobs, one producer (Hopper: Client.pipeline)",
            one(ok, "enqueue", system="hopper", mode="pipeline"),
            fastest(select(best, "enqueue", batch=1)),
            "jobs_per_s",
        ),
        "enqueue_confirmed": Comparison(
            "enqueue, single jobs, one producer (Hopper: Client.push, each confirmed)",
            one(ok, "enqueue", system="hopper", mode="", batch=1),
            fastest(select(best, "enqueue", batch=1)),
            "jobs_per_s",
        ),
        "enqueue_batch": Comparison(
            "enqueue, batches of 100, one producer",
            one(ok, "enqueue", system="hopper", batch=100),
            fastest(select(best, "enqueue", batch=100)),
            "jobs_per_s",
        ),
        "p50": Comparison(
            "push → start p50 ms at 1,000 jobs/s (lower is better)",
            latency,
            quickest(select(best, "latency"), "p50_ms"),
            "p50_ms",
        ),
        "p99": Comparison(
            "push → start p99 ms at 1,000 jobs/s (lower is better)",
            latency,
            quickest(select(best, "latency"), "p99_ms"),
            "p99_ms",
        ),
    }


def comparison_table(results: Sequence[Result]) -> str:
    rows = []
    for c in comparisons(results).values():
        hopper, peer = c.get(c.hopper), c.get(c.peer)
        digits = 0 if c.value == "jobs_per_s" else 2
        best = f"{number(peer, digits)} ({c.peer.label()})" if c.peer and peer is not None else "–"
        rows.append([c.figure, number(hopper, digits), best, number(c.ratio, 2)])
    return table(["figure", "Hopper", "best peer", "Hopper ÷ best peer"], rows)


def summary(results: Sequence[Result]) -> dict[str, float | None]:
    """The figures of the summary line (ratios are Hopper ÷ best peer)."""
    compared = comparisons(results)
    ok = measured(results)
    depth, crowd, idle = one(ok, "depth"), one(ok, "connections"), one(ok, "idle")
    archived = one(ok, "history")
    pushb = compared["enqueue_batch"].hopper
    return {
        "end_to_end_ratio": compared["end_to_end"].ratio,
        "enqueue_ratio": compared["enqueue"].ratio,
        "pushb_jobs_s": round(pushb.jobs_per_s) if pushb else None,
        "p99_ms": compared["p99"].get(compared["p99"].hopper),
        "rss_1m_mb": depth.extra.get("broker_rss_mb") if depth else None,
        "rss_2k_conn_mb": crowd.extra.get("broker_rss_mb") if crowd else None,
        "idle_queues_cpu_pct": idle.extra.get("total_pct") if idle else None,
        "history_page_p99_ms": archived.p99_ms if archived else None,
    }


def summary_line(figures: dict[str, float | None]) -> str:
    return "summary: " + " ".join(f"{k}={'NA' if v is None else v}" for k, v in figures.items())


def threaded_table(results: Sequence[Result], concurrencies: Sequence[int]) -> str:
    """Hopper's bundled client used one reply at a time from THREADS threads, beside the bar."""
    rows = []
    for s in (s for s in SYSTEMS if s.threaded):
        pushed = one(results, "enqueue", system=s.name, mode=THREADED)
        if pushed:
            rows.append([f"{name(s)}: Client.push from {THREADED}", "", jobs_cell(pushed)])
        for c in concurrencies:
            drained = one(results, "end_to_end", system=s.name, mode=fed_by(s.fast), concurrency=c)
            if drained:
                worker = f"{name(s)}: Worker ({s.fast}) fed by Client.push from {THREADED}"
                rows.append([worker, str(c), jobs_cell(drained)])
    rows = [[*row, f"{THREADED_BAR:,}"] for row in rows]
    return table(["shape", "worker c", "jobs/s", "bar (BullMQ here)"], rows)


def faktory_py_table(results: Sequence[Result], concurrencies: Sequence[int]) -> str:
    """The PyPI faktory client's Worker (threads) end to end on Hopper and on the reference
    server, same run (the reference rows need --reference)."""
    rows = []
    for c in concurrencies:
        ours = one(results, "end_to_end", system="faktory-py", mode="threads", concurrency=c)
        theirs = one(results, "end_to_end", system="faktory-py-ref", mode="threads", concurrency=c)
        if ours is None and theirs is None:
            continue
        ratio = "–"
        if ours and theirs and ours.jobs_per_s and theirs.jobs_per_s:
            ratio = f"{ours.jobs_per_s / theirs.jobs_per_s:.2f}"
        rows.append([str(c), jobs_cell(ours), jobs_cell(theirs), ratio])
    return table(["worker c", "on Hopper", "on the reference (Go)", "Hopper ÷ reference"], rows)


def tables(results: Sequence[Result], concurrencies: Sequence[int]) -> str:
    """Every table, with its heading, as Markdown."""
    sections = [
        ("Hopper ÷ best peer", comparison_table(results)),
        ("1. Enqueue rate, one producer process, no worker", enqueue_table(results)),
        (
            "2. End to end, jobs/s: pushed while one worker process drains them",
            end_to_end_table(results, concurrencies),
        ),
        ("3. Push → start latency, single pushes at 1,000 jobs/s", latency_table(results)),
        ("4-6. Hopper at scale", scale_table(results)),
        ("Raw protocol, against the reference Faktory server", raw_table(results)),
        (
            "The PyPI faktory client's Worker, end to end, on Hopper and on the reference",
            faktory_py_table(results, concurrencies),
        ),
        ("One reply at a time, from 10 threads", threaded_table(results, concurrencies)),
    ]
    return "\n\n".join(f"### {title}\n\n{body}" for title, body in sections)
