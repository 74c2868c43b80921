"""`NonFiniteGuard`: a non-finite loss stops the run (or skips that batch's update) before it reaches the weights
or a checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from vae_lightning.errors import RunStopped

# Under `skip`, a run stops once more than this share of an epoch's training batches were skipped: it is not
# learning from its data any more, and its checkpoints would only record that.
SKIP_LIMIT = 0.5


class NonFiniteGuard(Callback):
    """Checks every training loss before the update, and every validation epoch before a checkpoint keeps it.

    A non-finite training loss (on any process: they all agree) stops the run naming the step, the batch and
    the last good checkpoint, or with `policy: skip` drops that batch's update (the optimizer steps over no
    gradients; the run still stops once over half of an epoch's batches were skipped). A non-finite
    validation mean always stops the run.

    Args:
        policy: `stop` or `skip`.
    """

    def __init__(self, policy: Literal["stop", "skip"] = "stop") -> None:
        self.policy = policy
        self.skip_next_update = False
        self.skipped = 0  # this epoch's skipped batches

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.skipped = 0

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        bad = not math.isfinite(loss.item())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        self.skip_next_update = bad
        if not bad:
            return
        epoch_loop = trainer.fit_loop.epoch_loop
        where = (
            f"global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{epoch_loop.batch_progress.current.ready - 1} of the epoch; loss={loss.item():.4g})"
        )
        if self.policy == "stop":
            raise RunStopped(
                f"non-finite loss at {where}; stopped before it could update the weights. Last good checkpoint: "
                f"{last_good_checkpoint(trainer)}. Lower the learning rate, or set nonfinite.policy: skip."
            )
        rank_zero_warn(f"non-finite loss at {where}: skipped this batch's update (nonfinite.policy: skip).")
        self.skipped += 1
        if self.skipped > SKIP_LIMIT * trainer.num_training_batches:
            raise RunStopped(
                f"{self.skipped} of this epoch's {trainer.num_training_batches} training batches gave a non-finite "
                f"loss, more than nonfinite.policy: skip allows ({SKIP_LIMIT:.0%}); stopped at {where}. Last good "
                f"checkpoint: {last_good_checkpoint(trainer)}. Lower the learning rate, or look for bad data."
            )

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if self.skip_next_update:  # torch's optimizers leave every parameter without a gradient as it is
            optimizer.zero_grad(set_to_none=True)
            self.skip_next_update = False

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Runs before the checkpoint callbacks' own `on_validation_end` (Lightning calls those last)."""
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if bad:
            raise RunStopped(
                f"validation after epoch {trainer.current_epoch} gave {', '.join(f'{k}={v}' for k, v in bad.items())}; "
                f"stopped before a checkpoint recorded it. Last good checkpoint: {last_good_checkpoint(trainer)}. "
                "Lower the learning rate, or look for inputs the networks cannot handle."
            )


def last_good_checkpoint(trainer: Trainer) -> str:
    """This run's newest checkpoint file (its last.ckpt or best), else a note that there is none."""
    paths = [Path(p) for cb in trainer.checkpoint_callbacks for p in (cb.last_model_path, cb.best_model_path) if p]
    paths = [p for p in paths if p.is_file()]
    return str(max(paths, key=lambda p: p.stat().st_mtime)) if paths else "none written yet in this run"
