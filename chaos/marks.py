"""The pytest marks of a long run: marked `chaos`, skipped unless HOPPER_CHAOS is set."""

import os

import pytest

LONG_RUN = 600  # seconds one long run may take

CHAOS = [
    pytest.mark.chaos,
    pytest.mark.skipif(not os.environ.get("HOPPER_CHAOS"), reason="long run: make chaos"),
    pytest.mark.timeout(LONG_RUN),
]
