"""What the figures were measured on."""

import os
import platform
import subprocess
import sys
from pathlib import Path


def describe() -> dict[str, str]:
    """CPU, cores, memory, kernel, Python and redis-server versions, load average now."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    redis = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 2**20:.0f} GiB",
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "redis_server": next((w.split("=")[1] for w in redis if w.startswith("v=")), "unknown"),
        "load_average": " ".join(f"{load:.2f}" for load in os.getloadavg()),
    }
