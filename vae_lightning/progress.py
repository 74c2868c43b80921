"""`TimedProgressBar`: Lightning's tqdm bar, redrawn by the clock rather than every n steps."""

from __future__ import annotations

import math
import time

from lightning.pytorch.callbacks import TQDMProgressBar


class TimedProgressBar(TQDMProgressBar):
    """Lightning's `TQDMProgressBar`, redrawn at most every `refresh_seconds` (and on each loop's last
    batch), so it costs the same share of a run whatever the speed: a redraw takes ~0.4 ms (tqdm's
    formatting and the metrics), which every 10th step of the vanilla MLP on a 2-core CPU (~280 steps
    a second) was ~1% of training; by the clock it is ~10 redraws a second at any step rate.

    Args:
        refresh_rate: redraw at most every this many batches (0 hides the bar), as Lightning's.
        process_position: as Lightning's (for several bars at once).
        leave: as Lightning's (keep each epoch's bar).
        refresh_seconds: and at most once in this many seconds; 0 redraws on every `refresh_rate`-th batch.
    """

    def __init__(
        self, refresh_rate: int = 1, process_position: int = 0, leave: bool = False, refresh_seconds: float = 0.1
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        if isinstance(refresh_seconds, bool) or not isinstance(refresh_seconds, (int, float)) or not refresh_seconds >= 0:
            raise ValueError(f"progress_bar.refresh_seconds must be a number of seconds >= 0, got {refresh_seconds!r}")
        self.refresh_seconds = float(refresh_seconds)
        self._last_redraw = -math.inf

    def _should_update(self, current: int, total: int | float) -> bool:
        # Lightning asks this before every per-batch redraw (train, validation, test, predict).
        if not super()._should_update(current, total):
            return False
        now = time.monotonic()
        if current == total or now - self._last_redraw >= self.refresh_seconds:
            self._last_redraw = now
            return True
        return False
