"""What the in-process tests train with: a small MLP VAE, the tiny set's datamodule, a quiet CPU Trainer."""

from __future__ import annotations

import torch
from lightning.pytorch import Trainer

from vae_lightning import MLPDecoder, MLPEncoder, MNISTDataModule, VAELitModule


def tiny_model(latent_dim: int = 2, hidden: int = 64, encoder=None, **kwargs) -> VAELitModule:
    """The MLP VAE (one hidden layer of `hidden`), weights seeded with 0; `encoder` replaces the MLP encoder."""
    torch.manual_seed(0)
    encoder = MLPEncoder(latent_dim, [hidden]) if encoder is None else encoder
    return VAELitModule(encoder, MLPDecoder(latent_dim, [hidden]), latent_dim=latent_dim, **kwargs)


def tiny_data(tiny_mnist, **kwargs) -> MNISTDataModule:
    """The `tiny_mnist` fixture's set: 250 training images in batches of 25, 50 for validation."""
    data_dir, checksums = tiny_mnist
    kwargs = {"val_size": 50, "batch_size": 25, "download": False, **kwargs}
    return MNISTDataModule(data_dir=str(data_dir), checksums=checksums, **kwargs)


def quiet_trainer(**kwargs) -> Trainer:
    """A one-device CPU Trainer with no logger, bar, model summary or checkpoints unless given."""
    kwargs = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        **kwargs,
    }
    return Trainer(**kwargs)
