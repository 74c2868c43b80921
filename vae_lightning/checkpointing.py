"""Checkpoints that survive faults: atomic writes, an always-current last.ckpt, checked reads."""

from __future__ import annotations

import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_lightning.atomic import atomic_path
from vae_lightning.errors import ConfigError
from vae_lightning.runs import run_dir

log = logging.getLogger(__name__)


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous file at that path is untouched."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside its target, syncs it, then renames it into place.

    A full disk or an unwritable folder raises `CheckpointWriteError` naming the file, and the
    previous checkpoint at that path stays intact (a rename either happens whole or not at all).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        target = Path(path)
        buffer = io.BytesIO()  # serialised in memory first: torch.save's zip writer turns a failed file
        torch.save(checkpoint, buffer)  # write (e.g. a full disk) into a RuntimeError without the OS's reason
        try:
            with atomic_path(target) as tmp, open(tmp, "wb") as out:
                out.write(buffer.getbuffer())
                out.flush()
                os.fsync(out.fileno())
        except OSError as err:
            kept = f"the previous {target.name} is intact" if target.exists() else "no earlier file was there"
            raise CheckpointWriteError(
                f"could not write checkpoint {target}: {err.strerror or err} ({kept}). "
                f"Free disk space or make {target.parent} writable, then resume with --ckpt_path last."
            ) from err


class LastCheckpoint(Callback):
    """Keeps `<run dir>/checkpoints/last.ckpt` (beside the best checkpoint) the latest state of training.

    Rewritten at the end of every training epoch (after its validation) and, when
    `every_n_train_steps` > 0, every that many optimizer steps, so a killed run loses at most the
    steps since then. Resume with `vae-lightning fit --config ... --ckpt_path last`.

    Args:
        every_n_train_steps: also save every this many steps (0: only at epoch ends).
        dirpath: folder for last.ckpt; default the run's `checkpoints` folder.
    """

    def __init__(self, every_n_train_steps: int = 0, dirpath: str | None = None) -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int) or every_n_train_steps < 0:
            raise ConfigError(f"last_checkpoint.every_n_train_steps must be an integer >= 0, got {every_n_train_steps!r}.")
        self.every_n_train_steps, self.dirpath = every_n_train_steps, dirpath
        self.path: Path | None = None

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":  # every rank: run_dir broadcasts
            folder = Path(self.dirpath) if self.dirpath else run_dir(trainer) / "checkpoints"
            self.path = folder / "last.ckpt"

    def _save(self, trainer: Trainer) -> None:
        if self.path is not None and not trainer.sanity_checking and not trainer.fast_dev_run:
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole training state; collective

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._save(trainer)


def check_checkpoint_file(path: str | os.PathLike, field: str = "--ckpt_path") -> Path:
    """Refuse a missing, truncated, corrupted or code-carrying checkpoint before Lightning loads it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{field} {str(path)!r} is not a file: point it at a .ckpt written by `vae-lightning fit`.")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ConfigError(
            f"{field} {str(path)!r} is truncated or corrupted ({err}); it cannot be loaded. "
            f"Use another checkpoint (a best-*.ckpt beside it, or an earlier run's last.ckpt)."
        ) from err
    if bad is not None:
        raise ConfigError(f"{field} {str(path)!r} is corrupted (member {bad} fails its checksum); use another checkpoint.")
    try:  # weights-only: tensors and plain data, never code; mmap: the tensors are not read here
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise ConfigError(
            f"{field} {str(path)!r} holds more than tensors and plain data, so it was not loaded (no code from a "
            f"checkpoint runs here): {str(err).splitlines()[-1] if str(err) else type(err).__name__}"
        ) from err
    return path


def find_last_checkpoint(root: Path) -> Path | None:
    """The most recently written `last.ckpt` among `<root>/*/checkpoints/`, or None."""
    candidates = list(root.glob("*/checkpoints/last.ckpt"))
    return max(candidates, key=lambda p: p.stat().st_mtime) if candidates else None
