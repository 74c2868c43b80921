"""`Progress`: Lightning's tqdm bar on a terminal; one plain line per epoch when the output goes to a file."""

import sys
import time
from typing import Literal

from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar


class Progress(TQDMProgressBar):
    """Lightning's `TQDMProgressBar` when standard error is a terminal; else (a file shows a bar's redraws as cursor
    codes) one line per training epoch: its number, the step, its seconds, the bar's metrics and validation means.

    Args:
        refresh_rate: steps between redraws of the bar.
        lines: `auto` (lines unless standard error is a terminal), `always` or `never`.
    """

    def __init__(self, refresh_rate: PositiveInt = 10, lines: Literal["auto", "always", "never"] = "auto") -> None:
        super().__init__(refresh_rate)
        self.lines = lines == "always" or lines == "auto" and not sys.stderr.isatty()
        self.started = time.perf_counter()
        if self.lines:
            self.disable()  # every tqdm bar stays silent

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.lines or not trainer.is_global_zero:
            return
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        metrics |= {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        shown = ", ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        seconds = time.perf_counter() - self.started
        epoch = f"{trainer.current_epoch + 1}" + (f"/{trainer.max_epochs}" if trainer.max_epochs > 0 else "")
        print(f"epoch {epoch}: step {trainer.global_step}, {seconds:.1f} s; {shown}", file=sys.stderr, flush=True)
