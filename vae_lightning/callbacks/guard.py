"""`NonFiniteGuard`: a non-finite loss stops the run (or skips its update) before the weights or a checkpoint."""

import math
import os
from typing import Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from vae_lightning.errors import RunStopped

SKIP_LIMIT = 0.5  # share of an epoch's batches skipped beyond which a run is no longer learning from its data


class NonFiniteGuard(Callback):
    """Stops a run at a non-finite training loss before the update, naming the step, batch and last good checkpoint
    (`skip`: drops that update instead, up to half an epoch's batches), and at a non-finite validation mean.

    Args:
        policy: `stop` or `skip`.
    """

    def __init__(self, policy: Literal["stop", "skip"] = "stop") -> None:
        self.policy, self.skip_next_update, self.skipped = policy, False, 0  # skipped: this epoch's skipped batches

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.skipped = 0

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        bad = not math.isfinite(loss.item())  # on any process: they all skip, or all stop
        self.skip_next_update = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not self.skip_next_update:
            return
        epoch, batch = trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.ready - 1
        where = f"global step {trainer.global_step} (epoch {epoch}, batch {batch} of the epoch; loss={loss.item():.4g})"
        if self.policy == "stop":
            what = f"non-finite loss at {where}; stopped before it could update the weights"
            stop(trainer, what, "set nonfinite.policy: skip")
        rank_zero_warn(f"non-finite loss at {where}: skipped this batch's update (nonfinite.policy: skip).")
        self.skipped += 1
        if self.skipped > SKIP_LIMIT * trainer.num_training_batches:
            share = f"{self.skipped} of this epoch's {trainer.num_training_batches} training batches"
            what = f"{share} gave a non-finite loss, more than nonfinite.policy: skip allows ({SKIP_LIMIT:.0%})"
            stop(trainer, f"{what}; stopped at {where}", "look for bad data")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if self.skip_next_update:  # torch's optimizers leave every parameter without a gradient as it is
            optimizer.zero_grad(set_to_none=True)
            self.skip_next_update = False

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # before checkpoints are saved
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        if bad and not trainer.sanity_checking:
            what = f"validation after epoch {trainer.current_epoch} gave {bad}; stopped before a checkpoint recorded it"
            stop(trainer, what, "look for inputs the networks cannot handle")


def stop(trainer: Trainer, what: str, fix: str) -> None:
    """Raise RunStopped: `what`, this run's newest checkpoint (its last.ckpt or best), and `fix`."""
    paths = [p for cb in trainer.checkpoint_callbacks for p in (cb.last_model_path, cb.best_model_path)]
    last = max(filter(os.path.isfile, paths), key=os.path.getmtime, default="none written yet in this run")
    raise RunStopped(f"{what}. Last good checkpoint: {last}. Lower the learning rate, or {fix}.")
