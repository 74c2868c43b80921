"""`vae-lightning fit|validate|test|predict --config ...`: the LightningCLI of the package."""

from __future__ import annotations

import sys

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI

from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import ConfigError
from vae_lightning.module import VAELitModule
from vae_lightning.nets import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder  # noqa: F401 - short class_paths
from vae_lightning.predict import LatentWriter

# Two checkpoint callbacks, because since Lightning 2.6 `save_last=True` rewrites last.ckpt only when a
# top-k checkpoint is saved, which makes it a copy of the best (see openclimatefix/pvnet#544).
CHECKPOINT_DEFAULTS = {
    # the best by val/nelbo: <log_dir>/checkpoints/best-epochNNN-val_nelboXX.XX.ckpt
    "checkpoint.monitor": "val/nelbo",
    "checkpoint.mode": "min",
    "checkpoint.save_top_k": 1,
    "checkpoint.filename": "best-epoch{epoch:03d}-val_nelbo{val/nelbo:.2f}",
    "checkpoint.auto_insert_metric_name": False,
    # the latest state, rewritten every epoch: <log_dir>/checkpoints/last.ckpt
    "last_checkpoint.filename": "last",
    "last_checkpoint.save_top_k": 1,
    "last_checkpoint.enable_version_counter": False,
}


class VAECLI(LightningCLI):
    """LightningCLI with `latent_dim` linked into both networks and best/last checkpoints always on."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.latent_dim", "model.encoder.init_args.latent_dim")
        parser.link_arguments("model.latent_dim", "model.decoder.init_args.latent_dim")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        # `predict` writes <log_dir>/latents_<split>.pt; configurable as `predictions.*`.
        parser.add_lightning_class_args(LatentWriter, "predictions")


def cli(args: ArgsType = None, run: bool = True) -> VAECLI:
    """Build (and with `run`, execute) the CLI; tests call it with a list of args and read `.trainer`."""
    try:
        return VAECLI(
            VAELitModule,
            MNISTDataModule,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            args=args,
            run=run,
        )
    except ConfigError as err:
        print(f"vae-lightning: error: {err}", file=sys.stderr)
        raise SystemExit(2) from err


def main(args: ArgsType = None) -> None:
    """Entry point of `vae-lightning` and `python -m vae_lightning`."""
    cli(args)
