"""The CLI's checks across several settings, each run before any work: what one setting alone can say is in its
signature instead (`Literal`, jsonargparse's `PositiveInt`, ...), where the parser names the key itself."""

from __future__ import annotations

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
from vae_lightning.callbacks.warmup import KLWarmup
from vae_lightning.checkpointing import check_checkpoint_file, checkpoint_score
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


def check_arguments(args: list[str]) -> None:
    """Before parsing: refuse `--speed false`, and a `--config` file that is not YAML, naming file, line and column."""
    if "--speed" in args and args[args.index("--speed") + 1 :][:1] == ["false"]:
        raise ConfigError("--speed false is now --speed null (every speed measure off).")
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    for path in filter(os.path.isfile, paths + [a.split("=", 1)[1] for a in args if a.startswith("--config=")]):
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or err
            raise ConfigError(f"--config {path}: not valid YAML{where} ({problem}): fix the file.") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--config {path}: cannot be read ({err}).") from err


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
    for item in [i for i in (logger if isinstance(logger, list) else [logger]) if hasattr(i, "class_path")]:
        save_dir = item.init_args.get("save_dir")
        if root and not (save_dir and Path(save_dir).is_absolute()):  # default_root_dir moves the whole run
            item.init_args["save_dir"] = os.path.join(root, save_dir or "")
        online = item.class_path.endswith("WandbLogger") and not item.init_args.get("offline")
        if online and os.environ.get("WANDB_MODE", "").lower() not in ("offline", "dryrun", "disabled"):
            netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))  # where `wandb login` keeps the key
            if not os.environ.get("WANDB_API_KEY") and not (
                os.access(netrc, os.R_OK) and "api.wandb.ai" in netrc.read_text()
            ):
                raise ConfigError(
                    "trainer.logger is W&B online, but no W&B API key is set up: run `wandb login` (or set "
                    "WANDB_API_KEY), or log offline with WANDB_MODE=offline or trainer.logger.init_args.offline: true "
                    "and `wandb sync` later."
                )


def check_fit(trainer: Trainer, model: LightningModule, datamodule: LightningDataModule) -> None:
    """Before a fit: monitors and warm-up checked against the model; its optimizer and schedule built once."""
    for callback in trainer.callbacks:
        if isinstance(callback, KLWarmup):
            callback.check(model)
        monitor = getattr(callback, "monitor", None)
        if not isinstance(callback, (ModelCheckpoint, EarlyStopping)) or not monitor:
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


def resolve_checkpoint(trainer: Trainer, kind: str, subcommand: str) -> Path:
    """`--ckpt_path last|best`: the newest last.ckpt, or the best-scored of the newest run's top-k checkpoints (every
    .ckpt but last.ckpt), in last_checkpoint.dirpath or checkpoint.dirpath when set, else in this logger's runs."""
    folders = [cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint) == (kind == "last")]
    if folders and folders[0]:
        where, pattern = Path(folders[0]), "*.ckpt"
    elif trainer.loggers:
        where, pattern = logger_root(trainer), "*/checkpoints/*.ckpt"  # each run logs to a new version
    else:
        where, pattern = Path(trainer.default_root_dir) / "checkpoints", "*.ckpt"
    runs: dict[Path, list[Path]] = {}
    for path in sorted(where.glob(pattern)):
        if (path.name == "last.ckpt") == (kind == "last"):
            runs.setdefault(path.parent, []).append(path)
    if not runs:
        what = "no last.ckpt under {}: nothing to resume" if kind == "last" else "no best checkpoint under {}"
        raise ConfigError(
            f"--ckpt_path {kind}: {what.format(where)}. Start without --ckpt_path, or give the checkpoint's path."
        )
    newest = runs[max(runs, key=lambda folder: max(p.stat().st_mtime for p in runs[folder]))]
    found = min(newest, key=checkpoint_score) if kind == "best" else newest[0]
    what = "Resuming from {} (the newest last.ckpt under {})" if kind == "last" else "Using {} (the best under {})"
    print(f"vae-lightning: {what.format(found, where)}", file=sys.stderr)
    return check_checkpoint_file(found, f"--ckpt_path {kind} ({found})", resume=subcommand == "fit")


def build_error(err: BaseException) -> ConfigError:
    """What the configured classes raised while built, as a ConfigError: ours as it is, another's naming the class
    whose `__init__` raised it, with its arguments (the outermost such frame: where the error arose)."""
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
    """A ConfigError for a setting Lightning refused (its MisconfigurationException or ValueError, raised in its own
    code), naming `seed_everything` when raised while seeding, else `trainer`; None for anything else."""
    frames = traceback.extract_tb(err.__traceback__)
    in_lightning = bool(frames) and frames[-1].filename.startswith(LIGHTNING)
    if not isinstance(err, (MisconfigurationException, ValueError)) or not in_lightning:
        return None
    field = "seed_everything" if any(frame.name == "seed_everything" for frame in frames) else "trainer"
    return ConfigError(f"{field}: {first_line(err)}.")


def saved_on_interrupt(trainer: Trainer | None) -> str:
    """What a Ctrl-C left to resume from: the run's last.ckpt, which holds the state at the step reached."""
    last = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, LastCheckpoint)] if trainer else []
    path = Path(last[0].dirpath or "") / "last.ckpt" if last else None
    if path and path.is_file() and trainer.state.fn == "fit" and trainer.global_step:
        return f"saved {path} (global step {trainer.global_step}): continue with the same command and --ckpt_path last"
    return "nothing was saved (training had not started)"
