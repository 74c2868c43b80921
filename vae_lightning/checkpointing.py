"""Checkpoints as inputs: a `--ckpt_path` checked before Lightning loads it, scored for `best`, and compared with
the data and model of the run that continues from it. Nothing in a checkpoint runs as code."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vae_lightning.data.files import sha256_of
from vae_lightning.errors import ConfigError

# What decides which images a run trains and validates on, and what their pixels are.
DATA_IDENTITY = ("val_size", "seed", "binarize", "checksums")
# What decides the model a checkpoint holds (LightningCLI puts these over the config under --ckpt_path).
ARCHITECTURE = ("latent_dim", "encoder", "decoder", "objective", "train_samples", "recon_weight", "kl_weight")
SECTIONS = {"data": ("datamodule_hyper_parameters", DATA_IDENTITY), "model": ("hyper_parameters", ARCHITECTURE)}


def peek(path: str | os.PathLike) -> Any:
    """A checkpoint's contents as tensors and plain data (never code), memory-mapped: for checks before loading."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def check_checkpoint_file(path: str | os.PathLike, field: str = "--ckpt_path", resume: bool = False) -> Path:
    """Refuse a missing, damaged or code-carrying checkpoint, or one not Lightning's (a bare state_dict, another
    dict), before Lightning loads it; with `resume`, also one of weights only (nothing to resume training from)."""
    path = Path(path)
    named = f"{field} {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{named} is not a file: point it at a .ckpt written by `vae-lightning fit`.")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} fails its checksum")
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ConfigError(
            f"{named} is truncated or corrupted ({err}); it cannot be loaded. Use another checkpoint (a "
            "best-*.ckpt beside it, or an earlier run's last.ckpt)."
        ) from err
    try:
        checkpoint = peek(path)
    except Exception as err:
        raise ConfigError(
            f"{named} holds more than tensors and plain data, so it was not loaded (no code from a checkpoint runs "
            f"here): {str(err).splitlines()[-1] if str(err) else type(err).__name__}"
        ) from err
    if not isinstance(checkpoint, dict) or not {"state_dict", "pytorch-lightning_version"} <= set(checkpoint):
        if not isinstance(checkpoint, dict):
            what = f"a {type(checkpoint).__name__}"
        elif all(isinstance(v, Tensor) for v in checkpoint.values()):
            what = "a bare state_dict (parameter tensors by name)"
        else:
            what = f"a dict of {sorted(map(str, checkpoint))[:6]}"
        raise ConfigError(
            f"{named} holds {what}, not a Lightning checkpoint (state_dict, hyper_parameters, "
            "pytorch-lightning_version): point it at a .ckpt written by `vae-lightning fit`, or load a bare "
            "state_dict in Python with model.load_state_dict(torch.load(path))."
        )
    if resume and not {"optimizer_states", "loops"} <= set(checkpoint):
        raise ConfigError(
            f"{named} holds weights only (no optimizer or loop state), so `fit` cannot resume from it: test or "
            "predict with it, or start a new fit without --ckpt_path."
        )
    return path


def provenance(path: str | os.PathLike | None) -> dict[str, str | None]:
    """What an output was made from: the checkpoint's absolute path and SHA-256 (both None without one)."""
    if not path or not Path(path).is_file():
        return {"checkpoint": None, "checkpoint_sha256": None}
    return {"checkpoint": str(Path(path).resolve()), "checkpoint_sha256": sha256_of(Path(path))}


def differences(path: str | os.PathLike, section: str, current: Any) -> list[str]:
    """Where checkpoint `path` and the `current` settings differ in what decides the `section` ("data", "model")."""
    key, names = SECTIONS[section]
    saved = peek(path).get(key) or {}
    pairs = [(k, _plain(saved[k]), _plain(current[k])) for k in names if k in saved and k in current]
    return [f"{section}.{k}: {a!r} in the checkpoint, {b!r} in the config" for k, a, b in pairs if a != b]


def _plain(value: Any) -> Any:
    """A config value (jsonargparse Namespace, class_path dict) as plain data, class paths by class name."""
    value = value.as_dict() if hasattr(value, "as_dict") else value
    if isinstance(value, dict):
        plain = {k: _plain(v) for k, v in value.items() if k != "latent_dim"}  # linked: compared on its own
        if "class_path" in plain:
            plain["class_path"] = str(plain["class_path"]).rsplit(".", 1)[-1]
        return plain
    return list(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def check_continuation(path: str | os.PathLike, module: nn.Module, model_config: Any, data_hparams: Any = None) -> None:
    """Refuse a checkpoint whose weights do not fit `module` (built from `model_config`); resuming a fit (with
    `data_hparams`), one that saw other data (another split, seed or binarization changes what numbers mean)."""
    changed = differences(path, "data", data_hparams) if data_hparams is not None else []
    if changed:
        raise ConfigError(
            f"--ckpt_path {str(path)!r}: resuming would continue on other data than the run saw "
            f"({'; '.join(changed)}). Resume with the run's data settings (its config.yaml), or start a new fit "
            "without --ckpt_path."
        )
    saved, own = peek(path).get("state_dict", {}), module.state_dict()
    problems = [
        f"{k}: {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
        for k, v in saved.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems += [f"{k}: missing from the checkpoint" for k in sorted(set(own) - set(saved))[:5]]
    problems += [f"{k}: in the checkpoint, not in the model" for k in sorted(set(saved) - set(own))[:5]]
    if problems:
        changed = "; ".join(differences(path, "model", model_config))
        raise ConfigError(
            "the checkpoint's architecture does not fit the model built from the config"
            + (f" ({changed})" if changed else "")
            + f": {'; '.join(problems[:8])}. Use the config the checkpoint was trained with (its config.yaml), "
            "or load it without a config: VAELitModule.load_from_checkpoint(path)."
        )


def checkpoint_score(path: Path) -> float:
    """The monitored value a ModelCheckpoint recorded when it wrote `path`, signed so that lower is better."""
    try:
        states = peek(path).get("callbacks", {})
    except Exception:  # unreadable: last choice (check_checkpoint_file names the problem if it is chosen)
        return math.inf
    for key, state in states.items():
        if key.startswith("ModelCheckpoint") and state.get("current_score") is not None:
            return -float(state["current_score"]) if "'mode': 'max'" in key else float(state["current_score"])
    return math.inf
