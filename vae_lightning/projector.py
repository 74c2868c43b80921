"""Latents to TensorBoard's Projector and W&B's 2-D projection (PCA, t-SNE, UMAP), each with its digit and image."""

import logging
from typing import NamedTuple

import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor

log = logging.getLogger(__name__)


class Embedding(NamedTuple):
    mu: Tensor  # (N, L) posterior means
    labels: Tensor  # (N,) digits
    index: Tensor  # (N,) positions in the split
    images: Tensor  # (N, 1, 28, 28) pixel values in [0, 1]


def has_projector(logger: Logger) -> bool:
    return isinstance(logger, (TensorBoardLogger, WandbLogger))


def to_projectors(loggers: list[Logger], tag: str, embedding: Embedding, step: int) -> None:
    """Send `embedding` under `tag` to each TensorBoard logger (with a sprite) and W&B logger (a table); on rank 0."""
    mu, labels, index = embedding.mu.detach().float().cpu(), embedding.labels.tolist(), embedding.index.tolist()
    images = embedding.images.detach().float().cpu().clamp(0.0, 1.0)
    for logger in filter(has_projector, loggers):
        if isinstance(logger, TensorBoardLogger):
            metadata = [[str(d), str(i)] for d, i in zip(labels, index)]
            logger.experiment.add_embedding(mu, metadata, images, step, tag, metadata_header=["digit", "index"])
            logger.experiment.flush()
        else:
            import wandb  # only W&B runs need it

            pixels = images.mul(255).round().to(torch.uint8).squeeze(1).numpy()  # (N, 28, 28)
            columns = ["index", "digit", "image", *(f"z{d}" for d in range(mu.shape[1]))]
            rows = [[i, d, wandb.Image(p), *z] for i, d, p, z in zip(index, labels, pixels, mu.tolist())]
            logger.log_table(key=tag, columns=columns, data=rows, step=step)
        log.info("Sent %d latents (%s) to %s", len(mu), tag, type(logger).__name__)
