"""Checkpoints that survive faults: atomic writes, an always-current last.ckpt, checked reads."""

from __future__ import annotations

import io
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from vae_lightning.atomic import atomic_path
from vae_lightning.distributed import attached_trainer
from vae_lightning.errors import ConfigError, check_int
from vae_lightning.runs import run_dir

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training met a non-finite loss (with model.nonfinite: stop)."""


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
        self.every_n_train_steps = check_int("last_checkpoint.every_n_train_steps", every_n_train_steps, minimum=0)
        self.dirpath = dirpath
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
        raise ConfigError(
            f"{field} {str(path)!r} is corrupted (member {bad} fails its checksum); use another checkpoint."
        )
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


def last_good_checkpoint(trainer: Trainer) -> str:
    """This run's last.ckpt (its latest state), else its best checkpoint, else a note that there is none."""
    for attribute in ("path", "best_model_path"):  # LastCheckpoint.path, then ModelCheckpoint.best_model_path
        for callback in trainer.callbacks:
            path = getattr(callback, attribute, None)
            if path and Path(path).is_file():
                return str(path)
    return "none written yet in this run"


def check_architecture(module: nn.Module, checkpoint: dict) -> None:
    """Raise ConfigError when a checkpoint's weights do not fit `module`, naming each difference."""
    saved, own = checkpoint.get("state_dict", {}), module.state_dict()
    problems = [
        f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
        for k, v in saved.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems += [f"{k}: missing from the checkpoint" for k in sorted(set(own) - set(saved))[:5]]
    problems += [f"{k}: in the checkpoint, not in the model" for k in sorted(set(saved) - set(own))[:5]]
    if not problems:
        return
    hparams = checkpoint.get("hyper_parameters", {})
    differences = []
    if "latent_dim" in hparams and hparams["latent_dim"] != getattr(module, "latent_dim", None):
        differences.append(
            f"latent_dim={hparams['latent_dim']!r} in the checkpoint, {module.latent_dim!r} in the config"
        )
    for key in ("encoder", "decoder"):
        saved_class = hparams[key].get("class_path", "") if isinstance(hparams.get(key), dict) else ""
        own_class = type(getattr(module, key)).__name__
        if saved_class and saved_class.rsplit(".", 1)[-1] != own_class:
            differences.append(f"{key} {saved_class.rsplit('.', 1)[-1]} in the checkpoint, {own_class} in the config")
    raise ConfigError(
        "the checkpoint's architecture does not fit the model built from the config"
        + (f" ({'; '.join(differences)})" if differences else "")
        + f": {'; '.join(problems[:8])}. Use the config the checkpoint was trained with (its config.yaml), "
        "or load it without a config: VAELitModule.load_from_checkpoint(path)."
    )


def save_random_states(module: LightningModule, checkpoint: dict) -> None:
    """Put every rank's random state (the reparameterisation noise) into `checkpoint["rng_states"]`, so a
    resumed run continues exactly (data order and binarization are functions of (seed, epoch, batch)).
    Under DDP every rank calls it: the states are all-gathered, (world, ...) each."""
    states = {"cpu": torch.get_rng_state()}
    if module.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(module.device)
    trainer = attached_trainer(module)
    if trainer is not None and trainer.world_size > 1:
        checkpoint["rng_states"] = {k: module.all_gather(v.to(module.device)).cpu() for k, v in states.items()}
    else:
        checkpoint["rng_states"] = {k: v.unsqueeze(0) for k, v in states.items()}


def restore_random_states(module: LightningModule, checkpoint: dict) -> None:
    """Restore this rank's random state from `checkpoint["rng_states"]` when the process count matches."""
    states = checkpoint.get("rng_states")
    trainer = attached_trainer(module)
    if states is None or trainer is None:
        return
    rank, world = trainer.global_rank, trainer.world_size
    if len(states["cpu"]) != world:
        rank_zero_warn(
            f"checkpoint saved by {len(states['cpu'])} processes, resumed by {world}: the noise streams "
            "start afresh, so the run will not repeat an uninterrupted one exactly."
        )
        return
    torch.set_rng_state(
        states["cpu"][rank].clone()
    )  # .clone(): a state that is a view of a larger tensor crashes torch
    if "cuda" in states and module.device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"][rank].clone(), module.device)


def nonfinite_step(module: LightningModule, means: Tensor, names: Sequence[str], batch_idx: int, policy: str) -> bool:
    """Whether this training step's loss (`means[0]`, the batch means of `names`) is not finite on any rank
    (every rank agrees).

    Under `policy` "skip" it warns and returns True (the step must not update the weights); under
    "stop" it raises NonFiniteLossError naming the step, the batch and the last good checkpoint.
    """
    trainer = module.trainer
    bad = not math.isfinite(means[0].item())
    if trainer.world_size > 1:
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
    if not bad:
        return False
    values = ", ".join(f"{name}={value:.4g}" for name, value in zip(names, means.tolist()))
    where = f"global step {module.global_step} (epoch {module.current_epoch}, batch {batch_idx} of the epoch; {values})"
    if policy == "skip":
        rank_zero_warn(f"non-finite loss at {where}: skipped this batch's update (model.nonfinite: skip).")
        return True
    raise NonFiniteLossError(
        f"non-finite loss at {where}; stopped before it could update the weights. Last good checkpoint: "
        f"{last_good_checkpoint(trainer)}. Lower the learning rate, or set model.nonfinite: skip to skip such batches."
    )
