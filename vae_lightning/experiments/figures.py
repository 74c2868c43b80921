"""Figures: drawn with `matplotlib.figure.Figure` (no pyplot state), sent to every logger that takes
images and always written as PNG, so a CSV-only run keeps them too."""

from __future__ import annotations

import re
from pathlib import Path

import numpy
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from vae_lightning.atomic import atomic_path


def new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas, never registered with pyplot (nothing to close, nothing leaks)."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def to_rgb(figure: Figure) -> numpy.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    canvas.draw()
    return numpy.asarray(canvas.buffer_rgba())[..., :3].copy()


def image_grid(images: Tensor, rows: int, cols: int, pad: int = 1) -> numpy.ndarray:
    """Tile (rows * cols, 1, 28, 28) pixel values into one (H, W) array with `pad` pixels between."""
    images = images.detach().float().cpu().reshape(rows, cols, 28, 28)
    canvas = torch.ones(rows * (28 + pad) + pad, cols * (28 + pad) + pad)
    for r in range(rows):
        for c in range(cols):
            top, left = pad + r * (28 + pad), pad + c * (28 + pad)
            canvas[top : top + 28, left : left + 28] = images[r, c]
    return canvas.numpy()


def publish(trainer: Trainer, key: str, figure: Figure, folder: Path) -> Path:
    """Send a figure to TensorBoard and W&B loggers at the trainer's global step; write it as PNG.

    Call on rank 0 only. Returns the PNG path: `<folder>/<key>-epoch<NNN>.png`.
    """
    rgb = to_rgb(figure)
    step = trainer.global_step
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, rgb, global_step=step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[rgb], step=step)
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', key)}-epoch{trainer.current_epoch:03d}.png"
    write_png(figure, path)
    return path


def write_png(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
