"""Figures of fault runs: each test records one line; `python -m chaos` sums them."""

import json
import os
from typing import Any

FIGURES_VARIABLE = "HOPPER_CHAOS_FIGURES"  # a JSON-lines file, set by `python -m chaos`


def record(run: str, **figures: Any) -> None:
    """Note the figures of one run (printed; appended to the figures file when one is set)."""
    line = json.dumps({"run": run, **figures}, sort_keys=True)
    print(line)
    path = os.environ.get(FIGURES_VARIABLE)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
