"""Data: MNIST files on disk -> verified -> in-memory tensors -> batches."""

from vae_lightning.data.datamodule import MNISTDataModule
from vae_lightning.data.files import MNIST_FILES, default_data_dir, ensure_mnist

__all__ = ["MNIST_FILES", "MNISTDataModule", "default_data_dir", "ensure_mnist"]
