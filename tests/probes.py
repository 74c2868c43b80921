"""Test-only callbacks, named by class_path in configs of subprocess runs (tests/ is on their PYTHONPATH)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import torch
from lightning.pytorch import Callback

from vae_lightning.nets import MLPEncoder


def image_codes(images) -> list[int]:
    """The unique code the tiny test set writes into the first row of each image (pixels in [0, 1] or bytes)."""
    rows = images.reshape(len(images), 28, 28)[:, 0, :16].float()
    bits = (rows > rows.max() / 2).long() if rows.max() > 0 else rows.long()
    return (bits * (2 ** torch.arange(16))).sum(1).tolist()


class SeenImages(Callback):
    """Records, per epoch, the codes of the training images this rank trained on; writes rank<r>.json."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.seen = Path(out_dir), {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.setdefault(str(trainer.current_epoch), []).extend(image_codes(batch[0]))

    def on_train_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


class NaNAfter(MLPEncoder):
    """An encoder that breaks on purpose: from its `after`-th training call on (until its `until`-th,
    excluded; 0: for good), logvar is NaN."""

    def __init__(self, latent_dim: int = 2, after: int = 3, until: int = 0) -> None:
        super().__init__(latent_dim, [64])
        self.after, self.until, self.calls = after, until, 0

    def forward(self, x):
        mu, logvar = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= self.after and not (self.until and self.calls >= self.until):
                logvar = logvar * float("nan")
        return mu, logvar


class KillAt(Callback):
    """Kills its own process with SIGKILL (no clean-up, like an OOM killer or a lost node) after `step` steps;
    only on global rank `rank` when given."""

    def __init__(self, step: int, rank: int | None = None) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), signal.SIGKILL)


class ProcessGroupSeen(Callback):
    """Records, at fit start, whether torch.distributed has a process group (in-process runs read `seen`)."""

    seen: list[bool] = []

    def on_fit_start(self, trainer, pl_module):
        ProcessGroupSeen.seen.append(torch.distributed.is_initialized())


class IntegerEncoder(MLPEncoder):
    """A network that breaks the contract: it rounds (mu, logvar) to integers."""

    def __init__(self, latent_dim: int = 2) -> None:
        super().__init__(latent_dim, [64])

    def forward(self, x):
        return tuple(t.round().long() for t in super().forward(x))


class InterruptAt(Callback):
    """Sends its own process `signum` (SIGINT: what Ctrl-C sends; SIGTERM: a scheduler's stop) after `step` steps."""

    def __init__(self, step: int, signum: str = "SIGINT") -> None:
        self.step, self.signum = step, getattr(signal, signum)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class SignalDuringTest(Callback):
    """Sends its own process `signum` `seconds` after the test starts, from a timer thread: in the middle of
    whatever the test is computing then."""

    def __init__(self, signum: str, seconds: float = 2.0) -> None:
        self.signum, self.seconds = getattr(signal, signum), seconds

    def on_test_start(self, trainer, pl_module) -> None:
        print(f"probe: sending {self.signum.name} in {self.seconds} s", flush=True)
        threading.Timer(self.seconds, os.kill, (os.getpid(), self.signum)).start()


class FlushProbe(Callback):
    """Prints whether every thread of torch's CPU pool flushes subnormals while the run trains."""

    def on_train_start(self, trainer, pl_module) -> None:
        from vae_lightning.callbacks.speed import subnormals_flushed

        print(f"every thread flushes subnormals: {subnormals_flushed(every_thread=True)}", flush=True)


class DivideByZero(Callback):
    """A bug in a callback: divides by zero at the first training batch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        print(1 / 0)
