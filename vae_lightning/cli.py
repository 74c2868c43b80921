"""`vae-lightning fit|validate|test|predict --config ...`: the LightningCLI of the package."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vae_lightning.checkpointing import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    LastCheckpoint,
    NonFiniteLossError,
    check_checkpoint_file,
    find_last_checkpoint,
)
from vae_lightning.data import MNISTDataModule
from vae_lightning.distributed import release_process_group
from vae_lightning.errors import ConfigError, check_number, explain
from vae_lightning.experiments import Experiments
from vae_lightning.module import RUN_SETTINGS, VAELitModule
from vae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder  # noqa: F401 - short class_paths
from vae_lightning.predict import LatentWriter
from vae_lightning.runs import logger_root, run_dir
from vae_lightning.speed import PLAIN_SETTINGS, NoProfiler, TimedProgressBar

log = logging.getLogger(__name__)

# The best checkpoint by val/nelbo, <log_dir>/checkpoints/best-epochNNN-val_nelboXX.XX.ckpt. The latest
# state is LastCheckpoint's last.ckpt: since Lightning 2.6 a ModelCheckpoint's `save_last` rewrites
# last.ckpt only when a top-k checkpoint is saved, which makes it a copy of the best (openclimatefix/pvnet#544).
CHECKPOINT_DEFAULTS = {
    "checkpoint.monitor": "val/nelbo",
    "checkpoint.mode": "min",
    "checkpoint.save_top_k": 1,
    "checkpoint.filename": "best-epoch{epoch:03d}-val_nelbo{val/nelbo:.2f}",
    "checkpoint.auto_insert_metric_name": False,
}
# The seed setting every variant config starts from: the vanilla MLP 784-400-z-400-784, Adam at 1e-3.
MODEL_DEFAULTS = {
    "model.encoder": {"class_path": "vae_lightning.nets.MLPEncoder", "init_args": {"hidden_dims": [400]}},
    "model.decoder": {"class_path": "vae_lightning.nets.MLPDecoder", "init_args": {"hidden_dims": [400]}},
    "model.optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001, "fused": True}},
    "model.train_matmul_precision": "medium",
}
TRAINER_DEFAULTS = {
    "max_epochs": 20,
    "devices": 1,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}},
}
OFFLINE_MODES = ("offline", "dryrun", "disabled")


class ConfigToLoggers(SaveConfigCallback):
    """Writes config.yaml to the log dir (LightningCLI's behaviour) and to the run's own folder when
    that differs (W&B shares its log dir between runs), and logs the full resolved config to every
    logger, so a W&B run carries it under `config`."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # every rank: both read broadcasts (save_config below runs on rank 0 alone, so it must not)
        self.run_folder, self.log_folder = run_dir(trainer), Path(trainer.log_dir or "")
        super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # rank 0 only
        if self.log_folder != self.run_folder:
            self.run_folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, self.run_folder / self.config_filename, skip_none=False, overwrite=True)
        resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": resolved})


def wandb_credentials_present() -> bool:
    """Whether `wandb login` (netrc) or WANDB_API_KEY has given W&B an API key. Reads no key aloud."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


class VAECLI(LightningCLI):
    """LightningCLI with the seed defaults, `latent_dim` linked into both networks, best/last checkpoints
    always on, the experiments and the speed switch as settings, atomic checkpoint writes, `--ckpt_path
    last` across log versions, and checked inputs."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.latent_dim", "model.encoder.init_args.latent_dim")
        parser.link_arguments("model.latent_dim", "model.decoder.init_args.latent_dim")
        parser.set_defaults(MODEL_DEFAULTS)
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(Experiments, "experiments")
        # `predict` writes <log_dir>/latents_<split>.pt; configurable as `predictions.*`.
        parser.add_lightning_class_args(LatentWriter, "predictions")
        parser.add_lightning_class_args(TimedProgressBar, "progress_bar")
        parser.add_argument(
            "--speed", type=bool, default=True, help="false: every speed measure off (vae_lightning.speed)"
        )

    def _instantiate_trainer(self, config: dict, callbacks: list[Callback]) -> Trainer:
        """The Trainer with only the CLI's callbacks that this run allows and uses.

        Left out: the `progress_bar.*` bar when the trainer shows none or its callbacks bring their own,
        and the checkpoint callbacks under `enable_checkpointing: false` (Lightning refuses both);
        `predict`'s writer outside `predict` and `experiments.*` when it names none (Lightning calls every
        callback at every hook). Without a profiler configured, `vae_lightning.speed.NoProfiler` (unless
        `--speed false`).

        LightningCLI builds the callbacks of `add_lightning_class_args` groups unconditionally and has no
        public hook between building them and the Trainer (checked with Lightning 2.6.6);
        tests/test_cli.py fails if this method stops being called with (config, callbacks).
        """
        own = [c for c in config.get("callbacks") or [] if isinstance(c, ProgressBar)]
        if own or config.get("enable_progress_bar") is False:
            callbacks = [c for c in callbacks if not isinstance(c, TimedProgressBar)]
        if config.get("enable_checkpointing") is False:  # Lightning refuses checkpoint callbacks then
            callbacks = [c for c in callbacks if not isinstance(c, (ModelCheckpoint, LastCheckpoint))]
        if self.subcommand != "predict":
            callbacks = [c for c in callbacks if not isinstance(c, LatentWriter)]
        callbacks = [c for c in callbacks if not (isinstance(c, Experiments) and not c.experiments)]
        if config.get("profiler") is None and self._settings().get("speed", True):
            config = {**config, "profiler": NoProfiler()}  # nothing to record: the same, cheaper per hook call
        return super()._instantiate_trainer(config, callbacks)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then refuse a bad explicit --ckpt_path before LightningCLI reads the hyperparameters in it,
        and remember the run settings, which the command line decides even under --ckpt_path."""
        super().parse_arguments(parser, args)
        config = self._settings()
        ckpt_path = config.get("ckpt_path") if self.config.get("subcommand") else None
        if ckpt_path not in (None, "last", "best", "hpc", "registry") and not str(ckpt_path).startswith("registry:"):
            check_checkpoint_file(ckpt_path)
        self.run_settings = {key: config.model[key] for key in RUN_SETTINGS if key in config.get("model", {})}

    def _settings(self):
        """This subcommand's part of the parsed config (the whole config without a subcommand)."""
        subcommand = self.config.get("subcommand")
        return self.config[subcommand] if subcommand else self.config

    def before_instantiate_classes(self) -> None:
        config = self._settings()
        # Older checkpoints carry run settings among their hyperparameters, which LightningCLI puts over the
        # config: the config's and the command line's values are put back, as for everything else they say.
        for key, value in self.run_settings.items():
            config.model[key] = value
        if not config.get("speed", True):
            for key, value in PLAIN_SETTINGS.items():
                if key in config:
                    config[key] = value
        if config.trainer.get("gradient_clip_val") is not None:  # Lightning takes a negative value silently
            check_number(
                "trainer.gradient_clip_val", config.trainer.gradient_clip_val, what="a clip value (null: none)"
            )
        if self.subcommand and config.get("weights_only") is None:
            config["weights_only"] = True  # checkpoints load as tensors and plain data: no code runs
        logger = config.trainer.get("logger")
        for item in logger if isinstance(logger, list) else [logger]:
            if isinstance(item, dict) or not hasattr(item, "class_path") or not item.class_path.endswith("WandbLogger"):
                continue
            args = item.init_args
            offline = bool(args.get("offline")) or os.environ.get("WANDB_MODE", "").lower() in OFFLINE_MODES
            if args.get("offline") and args.get("log_model"):
                raise ConfigError(
                    "trainer.logger.init_args.log_model uploads checkpoints as W&B artifacts, which needs W&B "
                    "online: set log_model: false for an offline run (checkpoints stay in the log dir)."
                )
            if not offline and not wandb_credentials_present():
                raise ConfigError(
                    "trainer.logger is W&B online, but no W&B API key is set up: run `wandb login` (or set "
                    "WANDB_API_KEY), or log offline with WANDB_MODE=offline or "
                    "trainer.logger.init_args.offline: true and `wandb sync` the run later."
                )

    def _before_run(self) -> None:
        """For every subcommand: atomic checkpoint writes; `--ckpt_path last` resolved across log versions."""
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") == "last":
            config["ckpt_path"] = str(self._resolve_last())

    def _resolve_last(self) -> Path:
        """`--ckpt_path last`: last_checkpoint.dirpath's last.ckpt when that is set, else the newest
        last.ckpt among this logger's earlier versions (each run logs to a new version)."""
        last = next((cb for cb in self.trainer.callbacks if isinstance(cb, LastCheckpoint)), None)
        if last is not None and last.dirpath:
            where, found = Path(last.dirpath), Path(last.dirpath) / "last.ckpt"
        elif self.trainer.loggers:
            where = logger_root(self.trainer)
            found = find_last_checkpoint(where)
        else:
            where = Path(self.trainer.default_root_dir)
            found = where / "checkpoints" / "last.ckpt"
        if found is None or not found.is_file():
            raise ConfigError(
                f"--ckpt_path last: no last.ckpt under {where}: nothing to resume. "
                "Start without --ckpt_path, or give the checkpoint's path."
            )
        log.info("Resuming from %s (the newest last.ckpt under %s)", found, where)
        return check_checkpoint_file(found)

    before_fit = before_validate = before_test = before_predict = _before_run


def cli(args: ArgsType = None, run: bool = True) -> VAECLI:
    """Build (and with `run`, execute) the CLI; tests call it with a list of args and read `.trainer`."""
    try:
        return VAECLI(
            VAELitModule,
            MNISTDataModule,
            save_config_callback=ConfigToLoggers,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
            run=run,
        )
    except (NonFiniteLossError, CheckpointWriteError) as err:
        print(f"vae-lightning: stopped: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    except Exception as err:  # a user's input (ours, or what Lightning, torch or the OS say of it): one line
        message = explain(err)
        if message is None or os.environ.get("VAE_LIGHTNING_DEBUG"):
            raise
        if not isinstance(err, ConfigError):
            message += " (VAE_LIGHTNING_DEBUG=1 shows the traceback)"
        print(f"vae-lightning: error: {message}", file=sys.stderr)
        raise SystemExit(2) from err


def main(args: ArgsType = None) -> None:
    """Entry point of `vae-lightning` and `python -m vae_lightning` (every DDP rank runs it): the run,
    then the process group released, whatever the run's end."""
    try:
        cli(args)
    finally:
        release_process_group()
