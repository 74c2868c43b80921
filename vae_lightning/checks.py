"""The CLI's checks across several settings, each run before any work: what one setting alone can say is in its
signature instead (`Literal`, jsonargparse's `PositiveInt`, ...), where the parser names the key itself."""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path

import lightning
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from vae_lightning.callbacks.last_checkpoint import LastCheckpoint
from vae_lightning.checkpointing import check_checkpoint_file, find_checkpoint
from vae_lightning.distributed import check_launch
from vae_lightning.errors import ConfigError, attributed, first_line
from vae_lightning.module import METRICS
from vae_lightning.runs import logger_root

# Settings that moved, old spelling -> new: refused with the new one on the command line and in a config;
# an older checkpoint's hyperparameters may still hold them (those values are dropped).
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
OFFLINE_MODES = ("offline", "dryrun", "disabled")
# Trainer counts Lightning takes unchecked (a 0 ends in a ZeroDivisionError mid-run), with their least value.
TRAINER_COUNTS = {"accumulate_grad_batches": 1, "check_val_every_n_epoch": 1, "num_nodes": 1}


def import_class(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _keys(tree: object, prefix: str = "") -> set[str]:
    if not isinstance(tree, dict):
        return set()
    return {f"{prefix}{k}" for k in tree} | {key for k, v in tree.items() for key in _keys(v, f"{prefix}{k}.")}


def check_arguments(args: list[str]) -> None:
    """Refuse a renamed setting (naming its new spelling) and a `--config` file that is not valid YAML (naming
    the file, line and column, which jsonargparse's message does not)."""
    given = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    if "--speed" in args and args[args.index("--speed") + 1 :][:1] == ["false"]:
        raise ConfigError("--speed false is now --speed null (every speed measure off).")
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    for path in paths + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]:
        if not Path(path).is_file():
            continue  # jsonargparse names a missing file itself
        try:
            given |= _keys(yaml.safe_load(Path(path).read_text()))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(
                f"--config {path}: not valid YAML{where} ({getattr(err, 'problem', None) or err}): fix the file."
            ) from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--config {path}: cannot be read ({err}).") from err
    for old, new in RENAMED.items():
        if any(key == old or key.endswith(f".{old}") for key in given):
            raise ConfigError(f"{old} is now {new}.")


def check_seed(seed: object) -> None:
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed <= 2**32 - 1:
        raise ConfigError(f"seed_everything: {seed} is not in bounds: give a seed from 0 to 4294967295.")


def check_settings(config, subcommand: str | None) -> None:
    """Before anything is built: the trainer's counts and the launcher, the loggers' folders and W&B's
    credentials; older checkpoints' run settings dropped; checkpoints loaded as weights and plain data."""
    for old in RENAMED:
        config.pop(old, None)
    trainer = config.trainer
    for key, minimum in TRAINER_COUNTS.items():
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
            raise ConfigError(f"trainer.{key} must be a positive integer, got {value!r}.")
    check_launch(trainer.get("num_nodes") or 1, trainer.get("devices"))
    clip = trainer.get("gradient_clip_val")
    if clip is not None and not clip >= 0:  # Lightning takes a negative value silently
        raise ConfigError(f"trainer.gradient_clip_val must be a clip value (null: none) >= 0, got {clip!r}.")
    if subcommand and config.get("weights_only") is None:
        config["weights_only"] = True  # checkpoints load as tensors and plain data: no code runs
    logger = trainer.get("logger")
    loggers = [item for item in (logger if isinstance(logger, list) else [logger]) if hasattr(item, "class_path")]
    root = trainer.get("default_root_dir")
    for item in loggers:  # --trainer.default_root_dir moves the whole run: relative logger folders go under it
        save_dir = item.init_args.get("save_dir")
        if root and not (save_dir and Path(save_dir).is_absolute()):
            item.init_args["save_dir"] = os.path.join(root, save_dir or "")
        if item.class_path.endswith("WandbLogger"):
            check_wandb(item.init_args)


def check_wandb(args) -> None:
    offline = bool(args.get("offline")) or os.environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES
    if args.get("offline") and args.get("log_model"):
        raise ConfigError(
            "trainer.logger.init_args.log_model uploads checkpoints as W&B artifacts, which needs W&B online: set "
            "log_model: false for an offline run (checkpoints stay in the log dir)."
        )
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if not offline and not os.environ.get("WANDB_API_KEY") and "api.wandb.ai" not in _read(netrc):
        raise ConfigError(
            "trainer.logger is W&B online, but no W&B API key is set up: run `wandb login` (or set WANDB_API_KEY), "
            "or log offline with WANDB_MODE=offline or trainer.logger.init_args.offline: true and `wandb sync` later."
        )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def check_fit(trainer: Trainer, model: LightningModule, datamodule: LightningDataModule) -> None:
    """Before a fit: monitors the model logs, and the optimizer and learning-rate schedule built once from the
    model's parameters (what they raise is theirs to say), the schedule as long as the run."""
    validates = getattr(datamodule, "val_size", None) != 0
    for callback in trainer.callbacks:
        monitor = getattr(callback, "monitor", None)
        if not isinstance(callback, (ModelCheckpoint, EarlyStopping)) or not monitor:
            continue
        field = "checkpoint.monitor" if isinstance(callback, ModelCheckpoint) else f"{type(callback).__name__}.monitor"
        if not validates and monitor.startswith("val/"):
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


def resolve_checkpoint(trainer: Trainer, kind: str, subcommand: str) -> Path:
    """`--ckpt_path last|best`: in last_checkpoint.dirpath (last) or checkpoint.dirpath (best) when set, else in
    the newest run of this logger that has one (each run logs to a new version)."""
    monitored = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint) == (kind == "last")]
    if monitored and monitored[0].dirpath:
        where = Path(monitored[0].dirpath)
        found = find_checkpoint(where, kind, runs=False)
    elif trainer.loggers:
        where = logger_root(trainer)
        found = find_checkpoint(where, kind)
    else:
        where = Path(trainer.default_root_dir)
        found = find_checkpoint(where / "checkpoints", kind, runs=False)
    if found is None:
        what = "no last.ckpt under {}: nothing to resume" if kind == "last" else "no best checkpoint under {}"
        raise ConfigError(
            f"--ckpt_path {kind}: {what.format(where)}. Start without --ckpt_path, or give the checkpoint's path."
        )
    what = "Resuming from {} (the newest last.ckpt under {})" if kind == "last" else "Using {} (the best under {})"
    print(f"vae-lightning: {what.format(found, where)}", file=sys.stderr)
    return check_checkpoint_file(found, f"--ckpt_path {kind} ({found})", resume=subcommand == "fit")


def being_built(err: BaseException) -> str:
    """The configured class whose construction raised `err`, with its arguments (the outermost `__init__` of an
    object in the traceback: where the error arose), else "the configuration"."""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        owner = frame.f_locals.get("self")
        if frame.f_code.co_name == "__init__" and owner is not None and not type(owner).__module__.startswith("json"):
            names = frame.f_code.co_varnames[1 : frame.f_code.co_argcount]
            given = ", ".join(f"{name}={frame.f_locals[name]!r}" for name in names if name in frame.f_locals)
            return f"{type(owner).__name__}({given})"
    return "the configuration"


def trainer_setting_error(err: BaseException) -> ConfigError | None:
    """A ConfigError for a setting the Trainer refused while it ran: Lightning's own MisconfigurationException or
    ValueError, raised in Lightning's code (where it arose, not what it says); None for anything else."""
    frames = traceback.extract_tb(err.__traceback__)
    in_lightning = bool(frames) and frames[-1].filename.startswith(LIGHTNING)
    if isinstance(err, (MisconfigurationException, ValueError)) and in_lightning:
        return ConfigError(f"trainer: {first_line(err)}.")
    return None


def saved_on_interrupt(trainer: Trainer | None) -> str:
    """What a Ctrl-C left to resume from: the run's last.ckpt, which holds the state at the step reached."""
    callbacks = trainer.checkpoint_callbacks if trainer is not None else []
    for callback in callbacks:
        path = Path(callback.dirpath or "") / "last.ckpt"
        if (
            isinstance(callback, LastCheckpoint)
            and trainer.state.fn == "fit"
            and trainer.global_step
            and path.is_file()
        ):
            step = trainer.global_step
            return f"saved {path} (global step {step}): continue with the same command and --ckpt_path last"
    return "nothing was saved (training had not started)"
