"""`vae-lightning fit|validate|test|predict --config ...`: the LightningCLI of the package."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from vae_lightning.atomic import remove_stale_temporaries
from vae_lightning.checkpointing import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    LastCheckpoint,
    NonFiniteLossError,
    check_checkpoint_file,
    check_same_data,
    find_checkpoint,
    model_differences,
)
from vae_lightning.data import MNISTDataModule
from vae_lightning.distributed import check_launch, distributed_failure, release_process_group
from vae_lightning.errors import ConfigError, check_int, check_number, explain
from vae_lightning.experiments import Experiment, Experiments
from vae_lightning.experiments.classifier import check_cache as check_classifier_cache
from vae_lightning.module import METRICS, RUN_SETTINGS, VAELitModule
from vae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder  # noqa: F401 - short class_paths
from vae_lightning.predict import LatentWriter
from vae_lightning.runs import (
    check_writable,
    highest_missing,
    logger_root,
    planned_run_dir,
    refuse_earlier_outputs,
    remove_if_unused,
    run_dir,
)
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
# Trainer counts Lightning takes unchecked (a 0 ends in a ZeroDivisionError mid-run), with their least value.
TRAINER_COUNTS = {"accumulate_grad_batches": 1, "check_val_every_n_epoch": 1, "num_nodes": 1}


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
        parser.add_argument(
            "--overwrite", type=bool, default=False, help="true: replace what an earlier run left where this one writes"
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

    def __init__(self, *args, new_folders: list[Path] | None = None, **kwargs) -> None:
        self.new_folders = new_folders if new_folders is not None else []  # see _check_outputs
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse (a config file that is not YAML refused by name), then refuse a bad explicit --ckpt_path before
        LightningCLI reads the hyperparameters in it, say where its model differs from the config's, and
        remember the run settings, which the command line decides even under --ckpt_path."""
        check_config_files(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)
        config = self._settings()
        ckpt_path = config.get("ckpt_path") if self.config.get("subcommand") else None
        if ckpt_path not in (None, "last", "best", "hpc", "registry") and not str(ckpt_path).startswith("registry:"):
            check_checkpoint_file(ckpt_path, resume=self.config.subcommand == "fit")
            differences = model_differences(ckpt_path, config.get("model", {}))
            if differences:
                print(
                    f"vae-lightning: note: the model is the checkpoint's, not the config's (--ckpt_path {ckpt_path}): "
                    f"{'; '.join(differences)}.",
                    file=sys.stderr,
                )
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
        for key, minimum in TRAINER_COUNTS.items():  # Lightning divides by some of them, deep in its loops
            if config.trainer.get(key) is not None:
                check_int(f"trainer.{key}", config.trainer[key], minimum=minimum)
        check_launch(config.trainer.get("num_nodes") or 1, config.trainer.get("devices"))
        if config.trainer.get("gradient_clip_val") is not None:  # Lightning takes a negative value silently
            check_number(
                "trainer.gradient_clip_val", config.trainer.gradient_clip_val, what="a clip value (null: none)"
            )
        if self.subcommand and config.get("weights_only") is None:
            config["weights_only"] = True  # checkpoints load as tensors and plain data: no code runs
        logger = config.trainer.get("logger")
        loggers = [item for item in (logger if isinstance(logger, list) else [logger]) if hasattr(item, "class_path")]
        root = config.trainer.get("default_root_dir")
        for item in loggers:  # --trainer.default_root_dir moves the whole run: relative logger folders go under it
            save_dir = item.init_args.get("save_dir")
            if root and not (save_dir and Path(save_dir).is_absolute()):
                item.init_args["save_dir"] = os.path.join(root, save_dir or "")
        for item in loggers:
            if not item.class_path.endswith("WandbLogger"):
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
        """For every subcommand, before any data is loaded: atomic checkpoint writes; `--ckpt_path last|best`
        resolved across log versions; a resumed fit checked to see the data its checkpoint saw; every output
        folder checked (`_check_outputs`)."""
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") in ("last", "best"):
            config["ckpt_path"] = str(self._resolve(config["ckpt_path"]))
        if self.subcommand == "fit" and config.get("ckpt_path") and Path(config["ckpt_path"]).is_file():
            check_same_data(config["ckpt_path"], self.datamodule.hparams)
        if self.subcommand == "fit":
            validates = getattr(self.datamodule, "val_size", None) != 0
            self._check_monitors(validates)
            if not validates:
                self._without_validation()
        # Rank 0 alone: the other processes start later, under its launcher. fast_dev_run writes no files.
        if rank_zero_only.rank == 0 and not self.trainer.fast_dev_run:
            self._check_outputs(config)

    def _check_monitors(self, validates: bool) -> None:
        """Refuse a checkpoint or early-stopping monitor the model never logs, before training (Lightning finds
        out at the end of the first epoch); with `data.val_size: 0` nothing is validated, so early stopping
        on a val/ metric is refused too (the CLI's best-checkpoint callback then simply saves none)."""
        for callback in self.trainer.callbacks:
            monitor = getattr(callback, "monitor", None)
            if not isinstance(callback, (ModelCheckpoint, EarlyStopping)) or not monitor:
                continue
            if not validates and isinstance(callback, EarlyStopping) and monitor.startswith("val/"):
                raise ConfigError(
                    f"EarlyStopping.monitor: {monitor!r} is never measured with data.val_size: 0 (no validation "
                    "images): hold some out (e.g. data.val_size: 5000) or remove the EarlyStopping callback."
                )
            if monitor not in METRICS and not monitor.startswith("exp/"):
                field = (
                    "checkpoint.monitor" if type(callback) is ModelCheckpoint else f"{type(callback).__name__}.monitor"
                )
                raise ConfigError(
                    f"{field}: {monitor!r} is not a metric the model logs: choose from {', '.join(METRICS)}, "
                    "or an experiment's exp/<experiment>/<measure>."
                )

    def _without_validation(self) -> None:
        """`data.val_size: 0`: no validation loop, and no checkpoint callback waiting for a val/ score it would
        never get (Lightning would warn every epoch); `last.ckpt` is still written."""
        trainer = self.trainer
        trainer.limit_val_batches = 0
        waiting = [cb for cb in trainer.callbacks if type(cb) is ModelCheckpoint and str(cb.monitor).startswith("val/")]
        trainer.callbacks = [cb for cb in trainer.callbacks if cb not in waiting]

    def _check_outputs(self, config) -> None:
        """Refuse, before any work, output folders that cannot be written or hold another run's files (unless
        --overwrite); a resumed fit may write beside the checkpoint it continues. The folders this command
        will create are remembered, so that `cli` removes them again if the command ends before writing."""
        trainer, run = self.trainer, planned_run_dir(self.trainer)
        outputs = []  # (field, folder, files that would be replaced)
        if trainer.loggers and run is not None:
            outputs.append(("trainer.logger", run, "*"))
        elif trainer.loggers:  # the logger names its run's folder only once it starts (W&B): a new one each run
            check_writable(logger_root(trainer), "trainer.logger")
        if self.subcommand == "fit":
            for callback in trainer.callbacks:
                if type(callback) in (ModelCheckpoint, LastCheckpoint):
                    field = "checkpoint.dirpath" if type(callback) is ModelCheckpoint else "last_checkpoint.dirpath"
                    folder = Path(callback.dirpath) if callback.dirpath else run and run / "checkpoints"
                    if folder is not None:
                        outputs.append((field, folder, "*.ckpt"))
            if any(isinstance(cb, (Experiments, Experiment)) for cb in trainer.callbacks):
                check_classifier_cache(self.datamodule.data_dir)
                if not trainer.loggers:
                    outputs.append(("trainer.default_root_dir", Path(trainer.default_root_dir) / "figures", "*.png"))
        writer = next((cb for cb in trainer.callbacks if isinstance(cb, LatentWriter)), None)
        if writer is not None and writer.output_dir is not None:
            split = getattr(self.datamodule, "predict_split", "predict")
            outputs.append(("predictions.output_dir", Path(writer.output_dir), f"latents_{split}.pt"))
        ckpt_path = config.get("ckpt_path")
        if self.subcommand == "fit" and ckpt_path and Path(ckpt_path).is_file():  # continues into its own folders
            continued = Path(ckpt_path).resolve().parent
            outputs = [o for o in outputs if o[1].resolve() not in (continued, *continued.parents)]
        refuse_earlier_outputs(outputs, overwrite=bool(self._settings().get("overwrite")))
        for _, folder, _ in outputs:
            remove_stale_temporaries(folder)
            top = highest_missing(folder)
            if top is not None:
                self.new_folders.append(top)

    def _resolve(self, kind: str) -> Path:
        """`--ckpt_path last|best`: the folder of last_checkpoint.dirpath (last) or checkpoint.dirpath (best) when
        set, else the newest run of this logger that has one (each run logs to a new version)."""
        callback_type = LastCheckpoint if kind == "last" else ModelCheckpoint
        callback = next((cb for cb in self.trainer.callbacks if type(cb) is callback_type), None)
        if callback is not None and callback.dirpath:
            where, found = Path(callback.dirpath), find_checkpoint(Path(callback.dirpath), kind, runs=False)
        elif self.trainer.loggers:
            where = logger_root(self.trainer)
            found = find_checkpoint(where, kind)
        else:
            where = Path(self.trainer.default_root_dir)
            found = find_checkpoint(where / "checkpoints", kind, runs=False)
        if found is None:
            what = "no last.ckpt under {}: nothing to resume" if kind == "last" else "no best checkpoint under {}"
            raise ConfigError(
                f"--ckpt_path {kind}: {what.format(where)}. Start without --ckpt_path, or give the checkpoint's path."
            )
        log.info(
            "%s from %s (the %s checkpoint under %s)",
            "Resuming" if kind == "last" else "Using",
            found,
            "newest last" if kind == "last" else "best",
            where,
        )
        return check_checkpoint_file(found, f"--ckpt_path {kind} ({found})", resume=self.subcommand == "fit")

    before_fit = before_validate = before_test = before_predict = _before_run


def check_config_files(args: list[str]) -> None:
    """Refuse a `--config` file that is not valid YAML, naming it with the line and column (jsonargparse's own
    message names neither)."""
    args = [str(a) for a in args]
    paths = [b for a, b in zip(args, args[1:]) if a in ("--config", "-c")]
    paths += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
    for path in paths:
        if not Path(path).is_file():
            continue  # jsonargparse names a missing file itself
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(
                f"--config {path}: not valid YAML{where} ({getattr(err, 'problem', None) or err}): fix the file."
            ) from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--config {path}: cannot be read ({err}).") from err


def cli(args: ArgsType = None, run: bool = True) -> VAECLI:
    """Build (and with `run`, execute) the CLI; tests call it with a list of args and read `.trainer`.

    Exit codes: 2 for input the user has to fix (one line on stderr, naming the field or file and the fix),
    1 for a run that stopped (a non-finite loss, a failed write), 130 for Ctrl-C (after saving last.ckpt).
    Output folders the command created are removed again when it ends before writing anything into them.
    """
    new_folders: list[Path] = []
    finished = False
    try:
        made = VAECLI(
            VAELitModule,
            MNISTDataModule,
            save_config_callback=ConfigToLoggers,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            seed_everything_default=42,
            trainer_defaults=TRAINER_DEFAULTS,
            args=args,
            run=run,
            new_folders=new_folders,
        )
        finished = True
        return made
    except SystemExit as err:
        if not isinstance(err.__context__, KeyboardInterrupt):  # Lightning exits 1 after Ctrl-C's clean-up
            raise
        interrupted(err.__context__)
    except KeyboardInterrupt as err:  # outside the Trainer: while parsing or building
        interrupted(err)
    except (NonFiniteLossError, CheckpointWriteError) as err:
        print(f"vae-lightning: stopped: {err}", file=sys.stderr)
        raise SystemExit(1) from err
    except Exception as err:  # a user's input (ours, or what Lightning, torch or the OS say of it): one line
        if (failure := distributed_failure(err)) and not os.environ.get("VAE_LIGHTNING_DEBUG"):
            status, message = failure
            print(f"vae-lightning: {'error' if status == 2 else 'stopped'}: {message}", file=sys.stderr)
            raise SystemExit(status) from err
        message = explain(err)
        if message is None or os.environ.get("VAE_LIGHTNING_DEBUG"):
            raise
        if not isinstance(err, ConfigError):
            message += " (VAE_LIGHTNING_DEBUG=1 shows the traceback)"
        print(f"vae-lightning: error: {message}", file=sys.stderr)
        raise SystemExit(2) from err
    finally:
        if not finished:
            for folder in new_folders:
                remove_if_unused(folder)


def interrupted(interrupt: KeyboardInterrupt) -> None:
    """Ctrl-C: say what was saved and how to go on, then exit with status 130 (128 + SIGINT)."""
    saved = getattr(interrupt, "saved_checkpoint", None)
    if saved:
        message = f"saved {saved}: continue with the same command and --ckpt_path last"
    else:
        message = "nothing was saved (training had not started)"
    print(f"vae-lightning: interrupted (Ctrl-C); {message}.", file=sys.stderr)
    raise SystemExit(130) from interrupt


def main(args: ArgsType = None) -> None:
    """Entry point of `vae-lightning` and `python -m vae_lightning` (every DDP rank runs it): the run,
    then the process group released, whatever the run's end. `explore` is its own command (no Trainer)."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["explore"]:
        from vae_lightning.explore import main as explore_main

        return explore_main(argv[1:])
    try:
        cli(args)
    finally:
        release_process_group()
