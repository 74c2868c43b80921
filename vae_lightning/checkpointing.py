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

    Rewritten at the end of every training epoch (after its validation), on Ctrl-C, and, when
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

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        """Ctrl-C while training: save the state reached (the steps since the last save are kept)."""
        if isinstance(exception, KeyboardInterrupt) and trainer.training and self.path is not None:
            self._save(trainer)
            # the CLI reads it off the interrupt to say where to resume from (Lightning then exits with status 1)
            exception.saved_checkpoint = f"{self.path} (global step {trainer.global_step})"


def peek(path: str | os.PathLike) -> Any:
    """A checkpoint's contents, weights-only (tensors and plain data, never code) and memory-mapped (its
    tensors are not read): for the checks and choices made before Lightning loads it."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def check_checkpoint_file(path: str | os.PathLike, field: str = "--ckpt_path", resume: bool = False) -> Path:
    """Refuse a missing, truncated, corrupted or code-carrying checkpoint, or a file that is not a Lightning
    checkpoint (a bare state_dict, any other dict), before Lightning loads it; with `resume`, also one saved
    with weights only (nothing to resume training from)."""
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
    try:
        checkpoint = peek(path)
    except Exception as err:
        raise ConfigError(
            f"{field} {str(path)!r} holds more than tensors and plain data, so it was not loaded (no code from a "
            f"checkpoint runs here): {str(err).splitlines()[-1] if str(err) else type(err).__name__}"
        ) from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "pytorch-lightning_version"} <= set(checkpoint):
        if isinstance(checkpoint, dict) and all(isinstance(v, Tensor) for v in checkpoint.values()):
            what = "a bare state_dict (parameter tensors by name)"
        else:
            keys = sorted(map(str, checkpoint))[:6] if isinstance(checkpoint, dict) else []
            what = f"a dict of {keys}" if isinstance(checkpoint, dict) else f"a {type(checkpoint).__name__}"
        raise ConfigError(
            f"{field} {str(path)!r} holds {what}, not a Lightning checkpoint (state_dict, hyper_parameters, "
            f"pytorch-lightning_version): point it at a .ckpt written by `vae-lightning fit`, or load a bare "
            f"state_dict in Python with model.load_state_dict(torch.load(path))."
        )
    if resume and not {"optimizer_states", "loops"} <= set(checkpoint):
        raise ConfigError(
            f"{field} {str(path)!r} holds weights only (no optimizer or loop state), so `fit` cannot resume from it: "
            f"test or predict with it, or start a new fit without --ckpt_path."
        )
    return path


# What decides which images a run trains and validates on, and what their pixels are.
DATA_IDENTITY = ("val_size", "seed", "binarize", "checksums")
# What decides the model a checkpoint holds (LightningCLI puts these over the config under --ckpt_path).
ARCHITECTURE = ("latent_dim", "encoder", "decoder", "objective", "train_samples", "recon_weight", "kl_weight")


def provenance(path: str | os.PathLike | None) -> dict[str, str | None]:
    """What an output was made from: the checkpoint's absolute path and SHA-256 (both None without one)."""
    if not path or not Path(path).is_file():
        return {"checkpoint": None, "checkpoint_sha256": None}
    from vae_lightning.data.files import sha256_of

    return {"checkpoint": str(Path(path).resolve()), "checkpoint_sha256": sha256_of(Path(path))}


def check_same_data(path: str | os.PathLike, data_hparams: dict) -> None:
    """Refuse to resume the fit of `path` on other data than it saw: another validation split, seed or
    binarization would validate on images it trained on, or change what the numbers mean."""
    saved = peek(path).get("datamodule_hyper_parameters")
    if not saved:
        return
    differences = [
        f"data.{key}: {saved[key]!r} in the checkpoint, {data_hparams.get(key)!r} now"
        for key in DATA_IDENTITY
        if key in saved and saved[key] != data_hparams.get(key)
    ]
    if differences:
        raise ConfigError(
            f"--ckpt_path {str(path)!r}: resuming would continue on other data than the run saw "
            f"({'; '.join(differences)}). Resume with the run's data settings (its config.yaml), "
            "or start a new fit without --ckpt_path."
        )


def _plain(value: Any) -> Any:
    """A config value (jsonargparse Namespace, class_path dict) as plain data, class paths by class name."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        plain = {k: _plain(v) for k, v in value.items() if k != "latent_dim"}  # linked: compared on its own
        if "class_path" in plain:
            plain["class_path"] = str(plain["class_path"]).rsplit(".", 1)[-1]
        return plain
    return list(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def model_differences(path: str | os.PathLike, model_config: Any) -> list[str]:
    """Where the model a checkpoint holds differs from the one `model_config` describes, one entry each."""
    saved = peek(path).get("hyper_parameters") or {}
    differences = []
    for key in ARCHITECTURE:
        if key not in saved or key not in model_config:
            continue
        theirs, ours = _plain(saved[key]), _plain(model_config[key])
        if theirs != ours:
            differences.append(f"model.{key} {theirs} (config: {ours})")
    return differences


def find_checkpoint(root: Path, kind: str, runs: bool = True) -> Path | None:
    """`last`: the most recently written last.ckpt; `best`: the best-scored of the top-k checkpoints
    (ModelCheckpoint's, every .ckpt but last.ckpt) of the most recent run that has one.

    With `runs`, `root` holds runs (`<root>/<run>/checkpoints/`); else it is a checkpoints folder itself.
    """
    folders = [p.parent for p in root.glob("*/checkpoints/*.ckpt")] if runs else [root]
    candidates: dict[Path, list[Path]] = {}
    for folder in set(folders):
        found = sorted(folder.glob("*.ckpt"))
        found = [p for p in found if (p.name == "last.ckpt") == (kind == "last")]
        if found:
            candidates[folder] = found
    if not candidates:
        return None
    newest = max(candidates, key=lambda f: max(p.stat().st_mtime for p in candidates[f]))
    return min(candidates[newest], key=_score) if kind == "best" else candidates[newest][0]


def _score(path: Path) -> float:
    """The monitored value a ModelCheckpoint recorded when it wrote `path`, signed so that lower is better."""
    try:
        states = peek(path).get("callbacks", {})
    except Exception:  # unreadable: last choice (check_checkpoint_file names the problem if it is chosen)
        return math.inf
    for key, state in states.items():
        if key.startswith("ModelCheckpoint") and state.get("current_score") is not None:
            score = float(state["current_score"])
            return -score if "'mode': 'max'" in key else score
    return math.inf


def check_finite_validation(module: LightningModule, means: dict[str, float]) -> None:
    """Stop a run whose validation means are not finite, before a checkpoint callback keeps them as its best."""
    bad = {name: value for name, value in means.items() if not math.isfinite(value)}
    if bad:
        raise NonFiniteLossError(
            f"validation after epoch {module.current_epoch} gave {', '.join(f'{k}={v}' for k, v in bad.items())}; "
            f"stopped before a checkpoint recorded it. Last good checkpoint: {last_good_checkpoint(module.trainer)}. "
            "Lower the learning rate, or look for inputs the networks cannot handle."
        )


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


# Under `nonfinite: skip`, a run stops once more than this share of an epoch's training batches were skipped:
# it is not learning from its data any more, and its checkpoints would only record that.
SKIP_LIMIT = 0.5


def nonfinite_step(module: LightningModule, means: Tensor, names: Sequence[str], batch_idx: int, policy: str) -> bool:
    """Whether this training step's loss (`means[0]`, the batch means of `names`) is not finite on any rank
    (every rank agrees).

    Under `policy` "skip" it warns and returns True (the step must not update the weights), counting the
    skips in `module.skipped_steps` (the module resets it every epoch) and raising NonFiniteLossError past
    `SKIP_LIMIT`; under "stop" it raises NonFiniteLossError naming the step, the batch and the last good
    checkpoint.
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
        module.skipped_steps += 1
        skipped = module.skipped_steps
        batches = trainer.num_training_batches
        if skipped > SKIP_LIMIT * batches:
            raise NonFiniteLossError(
                f"{skipped} of this epoch's {batches} training batches gave a non-finite loss, more than "
                f"model.nonfinite: skip allows ({SKIP_LIMIT:.0%}); stopped at {where}. Last good checkpoint: "
                f"{last_good_checkpoint(trainer)}. Lower the learning rate, or look for bad data."
            )
        return True
    raise NonFiniteLossError(
        f"non-finite loss at {where}; stopped before it could update the weights. Last good checkpoint: "
        f"{last_good_checkpoint(trainer)}. Lower the learning rate, or set model.nonfinite: skip to skip such batches."
    )
