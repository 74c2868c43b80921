"""Checkpoints as inputs: a `--ckpt_path` checked before Lightning loads it, found by `last`/`best` across runs,
and compared with the data and model of the run that continues from it. Nothing in a checkpoint runs as code."""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vae_lightning.errors import ConfigError


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


def check_architecture(module: nn.Module, path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose weights do not fit `module` (the model the config builds), naming each
    difference, before Lightning loads them."""
    checkpoint = peek(path)
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
