"""The overview's chart of jobs processed and failed per interval, drawn as inline SVG on the
server (no script, no assets from elsewhere)."""

from hopper_broker.web.figures import HISTORY_INTERVAL, HISTORY_SAMPLES, Sample

WIDTH, HEIGHT = 600, 160  # the SVG's coordinate space (it scales to the page's width)


class Chart:
    """Polylines for the processed and failed series, newest at the right."""

    def __init__(self, samples: list[Sample]) -> None:
        self.samples = samples
        self.width, self.height = WIDTH, HEIGHT
        self.top = max((max(s.processed, s.failed) for s in samples), default=0)
        self.interval = HISTORY_INTERVAL
        self.span_minutes = HISTORY_SAMPLES * HISTORY_INTERVAL / 60
        self.processed = self._points([s.processed for s in samples])
        self.failed = self._points([s.failed for s in samples])

    def _points(self, values: list[int]) -> str:
        step = WIDTH / max(HISTORY_SAMPLES - 1, 1)
        start = WIDTH - step * (len(values) - 1)
        scale = (HEIGHT - 4) / self.top if self.top else 0
        return " ".join(
            f"{start + i * step:.1f},{HEIGHT - 2 - v * scale:.1f}" for i, v in enumerate(values)
        )
