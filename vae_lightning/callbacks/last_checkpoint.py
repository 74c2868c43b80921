"""`LastCheckpoint`: Lightning's ModelCheckpoint keeping `last.ckpt`, the latest state of training."""

from pathlib import Path

from jsonargparse.typing import NonNegativeInt
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """`<run dir>/checkpoints/last.ckpt`, rewritten after every epoch, every `every_n_train_steps` steps if set, and
    when Ctrl-C or an error stops training (a class of its own: its state never clashes with another's).

    Args:
        dirpath: folder for last.ckpt; default the run's `checkpoints` folder.
        every_n_train_steps: save every this many optimizer steps too (0: every epoch only).
    """

    def __init__(self, dirpath: str | None = None, every_n_train_steps: NonNegativeInt = 0) -> None:
        self.steps = int(every_n_train_steps)
        super().__init__(
            dirpath=dirpath,
            filename="last",
            enable_version_counter=False,
            save_on_exception=True,
            save_on_train_epoch_end=True,
            every_n_train_steps=self.steps or None,
        )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Saving by steps: an epoch's end is saved too, so the run's final state always is."""
        super().on_train_epoch_end(trainer, pl_module)
        if self.steps and trainer.global_step % self.steps and not trainer.fast_dev_run and self.dirpath is not None:
            trainer.save_checkpoint(Path(self.dirpath) / "last.ckpt")
