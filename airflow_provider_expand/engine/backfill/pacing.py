"""How big the next batch is: adapted so each batch transaction takes about ``target_batch_time``.

A batch holds its row locks until it commits, so its duration is the longest an application write can
wait on it; the size follows the measured time per row: down at once when a batch overran the target, up by at
most 2x per batch, always within bounds.
"""

from __future__ import annotations

import datetime as dt


class BatchSizer:
    """Keeps the batch size near ``target`` seconds per batch; fixed when ``target`` is ``None``."""

    def __init__(self, start: int, target: dt.timedelta | None, low: int, high: int) -> None:
        self.low = low
        self.high = high
        self.size = min(max(start, low), high)
        self.target = target.total_seconds() if target is not None else None

    def observe(self, rows_scanned: int, seconds: float) -> int:
        """Feed back one batch (rows it covered, wall time of its transaction); return the next size."""
        if self.target is None or seconds <= 0 or rows_scanned <= 0:
            return self.size
        if rows_scanned < self.size and seconds < self.target:
            return self.size  # a short last window says nothing about the time per row
        ideal = rows_scanned * self.target / seconds
        # Too slow: straight down to the size that fits (the overrun is an app write's wait). Room to grow:
        # halfway towards the ideal, at most 2x, so one fast batch cannot swing it.
        grown = self.size * (1 + min(ideal / self.size, 2.0)) / 2
        proposed = ideal if ideal < self.size else grown
        self.size = round(min(max(proposed, self.low), self.high))
        return self.size
