"""How big the next batch is: adapted so each batch transaction takes about ``target_batch_time``.

A batch holds its row locks until it commits, so its duration is the longest an application write can
wait on it; the size follows the measured time per row, moving at most 2x per batch and staying within
bounds so one slow batch (a checkpoint, a noisy neighbour) cannot swing it wildly.
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
        step = min(max(ideal / self.size, 0.5), 2.0)
        # Halfway towards the ideal size: smooths out one-off slow or fast batches.
        proposed = self.size * (1 + step) / 2
        self.size = round(min(max(proposed, self.low), self.high))
        return self.size
