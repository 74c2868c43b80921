"""`OutputFolders`: before a run writes anything, every folder it will write to is checked."""

import shutil
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from vae_lightning import runs
from vae_lightning.callbacks.last_checkpoint import LastCheckpoint
from vae_lightning.errors import attributed


class OutputFolders(Callback):
    """Refuses, before any work (the CLI calls `check`), output folders that cannot be written or hold another run's
    files (run folder, checkpoints, figures, `predict`'s file), and removes those a failed run created and left empty.

    Args:
        overwrite: let this run replace what an earlier run left where it writes (the CLI's `--overwrite`).
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self.new_folders: set[Path] = set()  # each the outermost folder created: none inside another
        self.checked = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.checked:  # a Trainer built in Python (after its loggers start); the CLI checks before they do
            self.check(trainer, stage, trainer.ckpt_path, trainer.datamodule)

    def check(self, trainer: Trainer, stage: str, ckpt_path: str | None, datamodule=None) -> None:
        self.checked = True
        if not trainer.is_global_zero or trainer.fast_dev_run:  # fast_dev_run writes no files
            return
        with attributed("trainer.logger", "shorten or fix its save_dir and name"):  # e.g. a part over 255 bytes
            run = runs.planned_run_dir(trainer)
        outputs = [("trainer.logger", run, "*")] if trainer.loggers and run is not None else []  # (field, folder, glob)
        if trainer.loggers and run is None:  # the logger names its run's folder only as it starts (W&B): a new one
            runs.check_writable(runs.logger_root(trainer), "trainer.logger")
        for callback in trainer.callbacks:
            name = type(callback).__name__
            if stage == "fit" and isinstance(callback, ModelCheckpoint):
                field = "last_checkpoint.dirpath" if isinstance(callback, LastCheckpoint) else "checkpoint.dirpath"
                folder = Path(callback.dirpath) if callback.dirpath else run and run / "checkpoints"
                outputs += [(field, folder, "*.ckpt")] if folder is not None else []
            elif stage == "fit" and name == "Experiments" and not trainer.loggers:
                outputs.append(("trainer.default_root_dir", Path(trainer.default_root_dir) / "figures", "*.png"))
            elif stage == "predict" and name == "LatentWriter" and callback.output_dir is not None:
                split = getattr(datamodule, "predict_split", "predict")
                outputs.append(("predictions.output_dir", Path(callback.output_dir), f"latents_{split}.pt"))
        if stage == "fit" and ckpt_path and Path(ckpt_path).is_file():  # continues in its folders
            continued = Path(ckpt_path).resolve().parent
            outputs = [o for o in outputs if o[1].resolve() not in (continued, *continued.parents)]
        runs.refuse_earlier_outputs(outputs, self.overwrite)
        for _, folder, _ in outputs:
            runs.remove_stale_temporaries(folder)
        self.new_folders = {top for _, folder, _ in outputs if (top := runs.highest_missing(folder))}

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Remove the folders this run created that hold nothing but its saved config: no half-made run is left."""
        for folder in [folder for folder in self.new_folders if folder.is_dir()]:
            if all(p.name in ("config.yaml", "hparams.yaml") for p in folder.rglob("*") if p.is_file()):
                shutil.rmtree(folder)
