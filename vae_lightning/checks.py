"""The CLI's checks before any work: settings across fields (one setting alone is checked by its signature), `--config`
files, checkpoints (read as data, never code); and what other libraries raised, named by where it arose."""

import math
import os
import sys
import traceback
import zipfile
from pathlib import Path
from typing import Any

import lightning
import torch
import yaml
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch import Tensor, nn

from vae_lightning.callbacks.last_checkpoint import LastCheckpoint
from vae_lightning.callbacks.warmup import KLWarmup
from vae_lightning.distributed import check_launch
from vae_lightning.errors import ConfigError, attributed, first_line
from vae_lightning.module import METRICS
from vae_lightning.runs import logger_root

# Settings that moved, old -> new: refused when given, dropped from an older checkpoint's hyperparameters.
RENAMED = {
    "model.nll_samples": "test_likelihood.samples",
    "model.nll_chunk_size": "test_likelihood.chunk_size",
    "model.eval_seed": "test_likelihood.seed",
    "model.nonfinite": "nonfinite.policy",
    "model.flush_subnormals": "speed.flush_subnormals",
    "model.train_matmul_precision": "speed.train_matmul_precision",
    "model.lr_scheduler_interval": "nothing (the scheduler steps once per epoch): remove it",
}
LIGHTNING = str(Path(lightning.__file__).parent)  # where Lightning's own code lives
# What decides which images a run trains and validates on, and what their pixels are.
DATA_IDENTITY = ("val_size", "seed", "binarize", "checksums")
LOSS = ("objective", "train_samples", "recon_weight", "kl_weight")
# What decides the model a checkpoint holds (LightningCLI puts these over the config under --ckpt_path).
ARCHITECTURE = ("latent_dim", "encoder", "decoder", *LOSS)
# What a resumed fit continues as the checkpoint has it (its optimizer's state included), so a config may not change it.
TRAINING = ("optimizer", "lr_scheduler", "gradient_estimator", *LOSS)
SECTIONS = {"data": ("datamodule_hyper_parameters", DATA_IDENTITY), "model": ("hyper_parameters", ARCHITECTURE)}


def check_arguments(args: list[str]) -> None:
    """Before parsing: refuse `--speed false`, and a `--config` file that is not YAML, naming file, line and column."""
    if "--speed" in args and args[args.index("--speed") + 1 :][:1] == ["false"]:
        raise ConfigError("--speed false is now --speed null (every speed measure off).")
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    paths += [a.removeprefix("--config=") for a in args if a.startswith("--config=")]
    for path in [p for p in paths if os.path.isfile(p) and os.access(p, os.R_OK)]:  # others: jsonargparse names them
        try:
            yaml.safe_load(Path(path).read_bytes())  # bytes: a wrong encoding is a YAMLError too
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or first_line(err)
            raise ConfigError(f"--config {path}: not valid YAML{where} ({problem}): fix the file.") from err


def check_settings(config, subcommand: str | None) -> None:
    """Before anything is built: trainer settings Lightning takes unchecked, launcher counts, loggers' folders, W&B."""
    for old in RENAMED:  # an older checkpoint's run settings, dropped
        config.pop(old, None)
    trainer = config.trainer
    for key in ("accumulate_grad_batches", "check_val_every_n_epoch"):  # a 0 ends in a ZeroDivisionError mid-run
        if trainer.get(key) is not None and trainer[key] < 1:
            raise ConfigError(f"trainer.{key} must be a positive integer, got {trainer[key]!r}.")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not clip >= 0:  # Lightning takes a negative value silently
        raise ConfigError(f"trainer.gradient_clip_val must be a clip value (null: none) >= 0, got {clip!r}.")
    check_launch(trainer.get("num_nodes") or 1, trainer.get("devices"))
    if subcommand and config.get("weights_only") is None:
        config["weights_only"] = True  # checkpoints load as tensors and plain data: no code runs
    logger, root = trainer.get("logger"), trainer.get("default_root_dir")
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))  # where `wandb login` keeps the key
    key = os.environ.get("WANDB_API_KEY") or os.access(netrc, os.R_OK) and "api.wandb.ai" in netrc.read_text()
    offline = os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled")
    for item in [i for i in (logger if isinstance(logger, list) else [logger]) if hasattr(i, "class_path")]:
        save_dir = item.init_args.get("save_dir")
        if root and not (save_dir and Path(save_dir).is_absolute()):  # default_root_dir moves the whole run
            item.init_args["save_dir"] = os.path.join(root, save_dir or "")
        if item.class_path.endswith("WandbLogger") and not (key or offline or item.init_args.get("offline")):
            raise ConfigError(
                "trainer.logger is W&B online, but no W&B API key is set up: run `wandb login` (or set WANDB_API_KEY), "
                "or log offline (WANDB_MODE=offline or trainer.logger.init_args.offline: true) and `wandb sync` later."
            )


def check_fit(trainer: Trainer, model: LightningModule, datamodule: LightningDataModule) -> None:
    """Before a fit: monitors and warm-up checked against the model; its optimizer and schedule built once."""
    for callback in trainer.callbacks:
        if isinstance(callback, KLWarmup):
            callback.check(model)
        if not isinstance(callback, (ModelCheckpoint, EarlyStopping)) or not (monitor := callback.monitor):
            continue
        field = "checkpoint.monitor" if isinstance(callback, ModelCheckpoint) else f"{type(callback).__name__}.monitor"
        if getattr(datamodule, "val_size", None) == 0 and monitor.startswith("val/"):
            raise ConfigError(
                f"{field}: {monitor!r} is never measured with data.val_size: 0 (no validation images): hold some "
                "out (e.g. data.val_size: 5000) or remove that callback."
            )
        if monitor not in METRICS and not monitor.startswith("exp/"):
            raise ConfigError(
                f"{field}: {monitor!r} is not a metric the model logs: choose from {', '.join(METRICS)}, or an "
                "experiment's exp/<experiment>/<measure>."
            )
    with attributed("model.optimizer"):
        optimizer = model.optimizer_factory(model.parameters())
    if model.lr_scheduler_factory is None:
        return
    with attributed("model.lr_scheduler"):
        scheduler = model.lr_scheduler_factory(optimizer)
    total = getattr(scheduler, "total_steps", None)  # OneCycleLR raises once stepped past it: at the run's end
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR) and not 0 <= trainer.max_epochs <= total:
        raise ConfigError(
            f"model.lr_scheduler: OneCycleLR has total_steps={total} but trainer.max_epochs takes "
            f"{trainer.max_epochs} epochs (it steps once per epoch): set total_steps to {trainer.max_epochs}."
        )


def peek(path: str | os.PathLike) -> Any:
    """A checkpoint's contents as tensors and plain data (never code), memory-mapped: for checks before loading."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


# What a checkpoint's settings may name, to be imported on load; any other class path only if the config names it too.
TRUSTED_CODE = ("vae_lightning.", "torch.nn.", "torch.optim.", "lightning.pytorch.cli.instantiate_module")


def named_code(value: Any) -> list[str]:
    """Every class or function path nested in settings (`class_path`, Lightning's `_instantiator`), as strings."""
    value = value.as_dict() if isinstance(value, Namespace) else value
    if isinstance(value, dict):
        named = [v for k, v in value.items() if k in ("class_path", "_instantiator") and isinstance(v, str)]
        return named + named_code(list(value.values()))
    return [path for item in value for path in named_code(item)] if isinstance(value, (list, tuple)) else []


def check_checkpoint_file(
    path: str | os.PathLike, field: str = "--ckpt_path", resume: bool = False, trusted: Any = None
) -> Path:
    """Refuse a missing, damaged or non-Lightning checkpoint, or one naming code beyond `TRUSTED_CODE` and what the
    config (`trusted`) names itself (class paths read as strings, before any import); with `resume`, weights only."""
    path, named = Path(path), f"{field} {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{named} is not a file: point it at a .ckpt written by `vae-lightning fit`.")
    try:
        with zipfile.ZipFile(path) as archive:
            if (bad := archive.testzip()) is not None:  # reads every member and checks its CRC
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
    keys = set(checkpoint) if isinstance(checkpoint, dict) else set()
    if not {"state_dict", "pytorch-lightning_version"} <= keys:
        what = f"a dict of {sorted(map(str, keys))[:6]}" if keys else f"a {type(checkpoint).__name__}"
        if keys and all(isinstance(v, Tensor) for v in checkpoint.values()):
            what = "a bare state_dict (parameter tensors by name)"
        raise ConfigError(
            f"{named} holds {what}, not a Lightning checkpoint (state_dict, hyper_parameters, "
            "pytorch-lightning_version): point it at a .ckpt written by `vae-lightning fit`, or load a bare "
            "state_dict in Python with model.load_state_dict(torch.load(path))."
        )
    named_there = named_code([checkpoint.get("hyper_parameters"), checkpoint.get("datamodule_hyper_parameters")])
    if untrusted := [p for p in named_there if not p.startswith(TRUSTED_CODE) and p not in named_code(trusted)]:
        raise ConfigError(
            f"{named} names code outside vae_lightning, torch.nn and torch.optim ({untrusted[0]!r}), which loading "
            f"it would import; nothing was imported. If you trust it, name it in your config too (for a network: "
            f"--model.encoder {untrusted[0]})."
        )
    if resume and not {"optimizer_states", "loops"} <= keys:
        raise ConfigError(
            f"{named} holds weights only (no optimizer or loop state), so `fit` cannot resume from it: test or "
            "predict with it, or start a new fit without --ckpt_path."
        )
    if resume and trusted is not None:
        check_resume_settings(path, trusted)
    return path


def check_resume_settings(path: str | os.PathLike, model_config: Any) -> None:
    """Refuse resuming a fit with other training settings than the checkpoint's: Lightning would keep its optimizer
    (state, learning rate) and the model's settings would come from it, so the config's change would be dropped."""
    if changed := differences(path, "model", model_config, TRAINING):
        raise ConfigError(
            f"--ckpt_path {str(path)!r}: a resumed fit continues the run as it trained, its optimizer's state and "
            f"settings included, so it cannot take a changed {'; '.join(changed[:3])}. Resume with the run's "
            "settings (its config.yaml), or start a new fit without --ckpt_path."
        )


def checkpoint_score(path: Path) -> float:
    """The monitored value a ModelCheckpoint recorded when it wrote `path`, signed so that lower is better."""
    try:
        states = peek(path).get("callbacks", {})
    except Exception:  # unreadable: last choice (check_checkpoint_file names the problem if it is chosen)
        return math.inf
    for key, state in states.items():
        if key.startswith("ModelCheckpoint") and (score := state.get("current_score")) is not None:
            return -float(score) if "'mode': 'max'" in key else float(score)
    return math.inf


def resolve_checkpoint(trainer: Trainer, kind: str, subcommand: str) -> Path:
    """`--ckpt_path last|best`: the newest last.ckpt, or the best of the newest run's other .ckpt files, checked."""
    folders = [cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint) == (kind == "last")]
    where, pattern = Path(trainer.default_root_dir), "checkpoints/*.ckpt"
    if folders and folders[0]:
        where, pattern = Path(folders[0]), "*.ckpt"
    elif trainer.loggers:
        where, pattern = logger_root(trainer), "*/checkpoints/*.ckpt"  # each run logs to a new version
    found = sorted(path for path in where.glob(pattern) if (path.name == "last.ckpt") == (kind == "last"))
    if not found:
        what = "no last.ckpt under {}: nothing to resume" if kind == "last" else "no best checkpoint under {}"
        raise ConfigError(
            f"--ckpt_path {kind}: {what.format(where)}. Start without --ckpt_path, or give the checkpoint's path."
        )
    chosen = max(found, key=lambda path: path.stat().st_mtime)
    if kind == "best":  # of the newest run's checkpoints
        chosen = min((path for path in found if path.parent == chosen.parent), key=checkpoint_score)
    what = "Resuming from {} (the newest last.ckpt under {})" if kind == "last" else "Using {} (the best under {})"
    print(f"vae-lightning: {what.format(chosen, where)}", file=sys.stderr)
    return check_checkpoint_file(chosen, f"--ckpt_path {kind}", resume=subcommand == "fit")


def differences(path: str | os.PathLike, section: str, current: Any, names: tuple[str, ...] = ()) -> list[str]:
    """Where checkpoint `path` and the `current` settings of `section` ("data", "model") differ in `names` (default:
    what decides the data or the model), each as `<setting>: <saved> in the checkpoint, <current> in the config`."""
    key, decisive = SECTIONS[section]
    saved = peek(path).get(key) or {}
    shared = [k for k in names or decisive if k in saved and k in current]
    found = changes(section, {k: _plain(saved[k]) for k in shared}, {k: _plain(current[k]) for k in shared})
    return [f"{k}: {a!r} in the checkpoint, {b!r} in the config" for k, a, b in found]


def changes(key: str, saved: Any, current: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved, current) of each plain setting that differs: within a class that stays, its argument."""
    if isinstance(saved, dict) and isinstance(current, dict) and saved.get("class_path") == current.get("class_path"):
        return [change for k in saved | current for change in changes(f"{key}.{k}", saved.get(k), current.get(k))]
    return [(key, saved, current)] if saved != current else []


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
    """Refuse a checkpoint whose weights do not fit `module`, or, resuming a fit (`data_hparams`), saw other data or
    trained with other settings."""
    if data_hparams is not None and (changed := differences(path, "data", data_hparams)):
        raise ConfigError(
            f"--ckpt_path {str(path)!r}: resuming would continue on other data than the run saw "
            f"({'; '.join(changed)}). Resume with the run's data settings (its config.yaml), or start a new fit "
            "without --ckpt_path."
        )
    saved, own = peek(path).get("state_dict", {}), module.state_dict()
    shapes = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in saved.items() if k in own}
    problems = [f"{k}: {a} in the checkpoint, {b} in the model" for k, (a, b) in shapes.items() if a != b]
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
    if data_hparams is not None:
        check_resume_settings(path, model_config)


def build_error(err: BaseException) -> ConfigError:
    """What a configured class raised while built, as a ConfigError naming the class and its arguments (ours as is)."""
    while err.__cause__ is not None:  # jsonargparse wraps what a class raises in its own error (a Union's)
        err = err.__cause__
    if isinstance(err, ConfigError):
        return ConfigError(str(err))
    for frame, _ in traceback.walk_tb(err.__traceback__):
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "__init__" and owner is not None and not type(owner).__module__.startswith("json"):
            names = frame.f_code.co_varnames[1 : frame.f_code.co_argcount]
            given = ", ".join(f"{name}={frame.f_locals[name]!r}" for name in names if name in frame.f_locals)
            return ConfigError(f"{type(owner).__name__}({given}) could not be built: {first_line(err)}.")
    return ConfigError(f"the configuration could not be built: {first_line(err)}.")


def lightning_setting_error(err: BaseException) -> ConfigError | None:
    """A ConfigError naming `trainer` (`seed_everything` when seeding) for what Lightning's code refused; else None."""
    frames = traceback.extract_tb(err.__traceback__)
    in_lightning = bool(frames) and frames[-1].filename.startswith(LIGHTNING)
    if not isinstance(err, (MisconfigurationException, ValueError)) or not in_lightning:
        return None
    field = "seed_everything" if any(frame.name == "seed_everything" for frame in frames) else "trainer"
    return ConfigError(f"{field}: {first_line(err)}.")


def note_untrained(subcommand: str, ckpt_path: str | None) -> None:
    """Say that validate, test or predict without a checkpoint scores the config's freshly initialised model."""
    if not ckpt_path and subcommand in ("validate", "test", "predict"):
        print(
            "vae-lightning: note: no --ckpt_path, so this is the untrained model (initial weights): pass --ckpt_path "
            f"last, best or a file to {subcommand} a trained one.",
            file=sys.stderr,
        )


def saved_on_interrupt(trainer: Trainer | None) -> str:
    """What a Ctrl-C left to resume from: the run's last.ckpt, which holds the state at the step reached."""
    last = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)] if trainer else []
    path = Path(last[0].dirpath or "") / "last.ckpt" if last else None
    if path and path.is_file() and trainer.state.fn == "fit" and trainer.global_step:
        return f"saved {path} (global step {trainer.global_step}): continue with the same command and --ckpt_path last"
    return "nothing was saved (training had not started)"
