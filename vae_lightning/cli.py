"""`vae-lightning fit|validate|test|predict|explore`: the LightningCLI of the package, its defaults, its run pieces."""

from __future__ import annotations

import pydoc
import sys
from pathlib import Path
from typing import Any

from jsonargparse import SUPPRESS
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from vae_lightning import checks, runs
from vae_lightning.callbacks import CPUSpeed, OutputFolders
from vae_lightning.checks import check_checkpoint_file, check_continuation, differences
from vae_lightning.data import MNISTDataModule
from vae_lightning.distributed import distributed_failure, release_process_group
from vae_lightning.errors import ConfigError, RunStopped, attributed, run_command
from vae_lightning.module import VAELitModule
from vae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder  # noqa: F401 - short class_paths
from vae_lightning.runs import CLITrainer, ConfigToLoggers

COMMANDS = """commands: fit, validate, test, predict (Lightning's, below), and `vae-lightning explore --ckpt_path CKPT`
(a page to look inside a checkpoint's latent space; `vae-lightning explore --help`)."""
PIECE = "vae_lightning.callbacks."
# How a run is checkpointed, evaluated, guarded and sped up: Lightning callbacks, each on by default and
# configurable as `--<key>.<setting>` or off as `--<key> null` (README, "Run pieces").
PIECES: dict[str, dict[str, Any]] = {
    "checkpoint": {  # the best by val/nelbo: <run>/checkpoints/best-epochNNN-val_nelboXX.XX.ckpt
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"monitor": "val/nelbo", "filename": "best-epoch{epoch:03d}-val_nelbo{val/nelbo:.2f}"}
        | {"auto_insert_metric_name": False},
    },
    "last_checkpoint": {"class_path": PIECE + "LastCheckpoint"},  # <run>/checkpoints/last.ckpt
    "test_likelihood": {"class_path": PIECE + "TestLikelihood"},
    "nonfinite": {"class_path": PIECE + "NonFiniteGuard"},
    "outputs": {"class_path": PIECE + "OutputFolders"},
    "exact_resume": {"class_path": PIECE + "ExactResume"},
    "init": {"class_path": PIECE + "Initialisation"},  # torch's own unless set
    "kl_warmup": {"class_path": PIECE + "KLWarmup"},  # none unless set
    "speed": {"class_path": PIECE + "CPUSpeed", "init_args": {"train_matmul_precision": "medium"}},
    "progress_bar": {"class_path": PIECE + "Progress"},  # tqdm on a terminal, else a line per epoch
    "experiments": {"class_path": "vae_lightning.experiments.Experiments"},
    "predictions": {"class_path": PIECE + "LatentWriter"},  # `predict` writes <run>/latents_<split>.pt
}
# The commands a piece acts in (default: all; checkpoints too, whose states a checkpoint holds); elsewhere it stays
# out of the Trainer, which calls every callback on every hook of every step.
ACTS_IN = dict.fromkeys(("nonfinite", "exact_resume", "init", "kl_warmup"), ("fit",))
ACTS_IN |= {"test_likelihood": ("test",), "predictions": ("predict",), "experiments": ("fit", "validate")}
# The seed setting every variant config starts from: the vanilla MLP 784-400-z-400-784, Adam at 1e-3.
MODEL_DEFAULTS = {
    "model.encoder": {"class_path": "vae_lightning.nets.MLPEncoder", "init_args": {"hidden_dims": [400]}},
    "model.decoder": {"class_path": "vae_lightning.nets.MLPDecoder", "init_args": {"hidden_dims": [400]}},
    "model.optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.001, "fused": True}},
}
TRAINER_DEFAULTS = {
    "max_epochs": 20,
    "devices": 1,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}},
    "plugins": {"class_path": "vae_lightning.runs.AtomicCheckpointIO"},  # off: --trainer.plugins null
    "profiler": {"class_path": "vae_lightning.callbacks.speed.NoProfiler"},  # or another: simple, advanced, ...
}


class VAECLI(LightningCLI):
    """LightningCLI with the seed defaults, `latent_dim` linked into both networks, the run pieces, and every
    piece built once, with its errors attributed to it, before anything runs."""

    def __init__(self, *args, state: dict, **kwargs) -> None:
        self.state = state  # what `cli` acts on after the run: the trainer (Ctrl-C), the run folder claimed
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.latent_dim", "model.encoder.init_args.latent_dim", compute_fn=int)
        parser.link_arguments("model.latent_dim", "model.decoder.init_args.latent_dim", compute_fn=int)
        parser.set_defaults(MODEL_DEFAULTS)
        for key, default in PIECES.items():
            cls = pydoc.locate(default["class_path"])
            parser.add_argument(f"--{key}", type=cls | None, default=default, help=cls.__doc__.split("\n")[0])
        for old in checks.RENAMED:  # accepted only from an older checkpoint's hyperparameters, then dropped
            parser.add_argument(f"--{old}", type=Any, default=None, help=SUPPRESS)
        parser.add_argument("--overwrite", type=bool, default=False, help="replace what an earlier run left")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Refuse non-YAML config files and renamed settings; check a `--ckpt_path`, noting where its model differs."""
        checks.check_arguments([str(a) for a in (sys.argv[1:] if args is None else args)])
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        settings = self.config[subcommand] if subcommand else self.config
        if renamed := [old for old in checks.RENAMED if settings.get(old) is not None]:  # given, not a checkpoint's
            raise ConfigError(f"{renamed[0]} is now {checks.RENAMED[renamed[0]]}.")
        ckpt_path = settings.get("ckpt_path") if subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc") and not str(ckpt_path).startswith("registry"):
            check_checkpoint_file(ckpt_path, resume=subcommand == "fit", trusted=settings.get("model"))
            if changed := differences(ckpt_path, "model", settings.get("model", {})):
                note = f"the model is the checkpoint's, not the config's (--ckpt_path {ckpt_path})"
                print(f"vae-lightning: note: {note}: {'; '.join(changed)}.", file=sys.stderr)

    def before_instantiate_classes(self) -> None:
        settings = self.config[self.subcommand] if self.subcommand else self.config
        checks.check_settings(settings, self.subcommand)
        CPUSpeed.flush_at_start_up(settings.get("speed"))  # before any network is built
        self.state["claimed"] = runs.claim_run_folder(settings.get("trainer", {}).get("logger"))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ConfigError, RunStopped):
            raise
        except Exception as err:
            raise checks.build_error(err) from err

    def instantiate_trainer(self, **kwargs):
        """The Trainer with the config's own callbacks and the pieces this command uses (`PIECES`, `ACTS_IN`)."""
        settings = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer, own = settings.trainer, settings.trainer.get("callbacks") or []
        own = own if isinstance(own, list) else [own]
        left_out = {key for key, commands in ACTS_IN.items() if self.subcommand not in (*commands, None)}  # None: all
        if trainer.get("enable_checkpointing") is False:  # Lightning refuses checkpoint callbacks then
            left_out |= {key for key in PIECES if isinstance(settings.get(key), ModelCheckpoint)}
        if trainer.get("enable_progress_bar") is False or any(isinstance(c, ProgressBar) for c in own):
            left_out.add("progress_bar")
        if self.datamodule.val_size == 0:  # nothing validated: no best checkpoint waiting for a val/ score
            left_out.add("checkpoint")
            kwargs["limit_val_batches"] = 0
        if (outputs := settings.get("outputs")) is not None:
            outputs.overwrite |= bool(settings.get("overwrite"))
        pieces = [settings.get(key) for key in PIECES if key not in left_out]
        pieces = [piece for piece in pieces if piece is not None and not getattr(piece, "idle", False)]
        with attributed("trainer"):
            self.state["trainer"] = super().instantiate_trainer(callbacks=[*own, *pieces], **kwargs)
        return self.state["trainer"]

    def _before_run(self) -> None:
        """Before every subcommand: `--ckpt_path last|best` found, checked against the model and data, a fit's
        settings checked, and the folders the run writes to."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") in ("last", "best"):
            config["ckpt_path"] = str(checks.resolve_checkpoint(self.trainer, config["ckpt_path"], self.subcommand))
        ckpt_path = config.get("ckpt_path")
        checks.note_untrained(self.subcommand, ckpt_path)
        if ckpt_path and Path(ckpt_path).is_file():
            data = self.datamodule.hparams if self.subcommand == "fit" else None
            check_continuation(ckpt_path, self.model, self.config[self.subcommand].model, data)
        if self.subcommand == "fit":
            checks.check_fit(self.trainer, self.model, self.datamodule)
        for callback in self.trainer.callbacks:
            if isinstance(callback, OutputFolders):
                callback.check(self.trainer, self.subcommand, ckpt_path, self.datamodule)

    before_fit = before_validate = before_test = before_predict = _before_run


def cli(args: ArgsType = None, run: bool = True) -> VAECLI:
    """Build (and with `run`, execute) the CLI under the error policy (`errors.run_command`); tests read `.trainer`."""
    state: dict = {}

    def build() -> VAECLI:
        try:
            return VAECLI(
                VAELitModule,
                MNISTDataModule,
                save_config_callback=ConfigToLoggers,
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
                seed_everything_default=42,
                trainer_class=CLITrainer,
                trainer_defaults=TRAINER_DEFAULTS,
                parser_kwargs={"description": COMMANDS},
                args=args,
                run=run,
                state=state,
            )
        except Exception as err:
            if failure := distributed_failure(err) or checks.lightning_setting_error(err):
                raise failure from err
            raise

    with runs.releasing_claimed(state):
        return run_command("vae-lightning", build, lambda: checks.saved_on_interrupt(state.get("trainer")))


def main(args: ArgsType = None) -> None:
    """`vae-lightning` and `python -m vae_lightning` (every DDP rank): the run, then the process group released."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["explore"]:
        from vae_lightning.explore import main as explore_main

        return explore_main(argv[1:])
    try:
        cli(args)
    finally:
        release_process_group()
