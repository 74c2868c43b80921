"""Figures: tensors in, `matplotlib.figure.Figure` out, on an Agg canvas with no pyplot state."""

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor
from torchvision.utils import make_grid

from vae_lightning.runs import atomic_path

CELL = 0.42  # inches per 28x28 thumbnail


def new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas, never registered with pyplot (nothing to close, nothing leaks)."""
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def write_png(figure: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def show(ax, images: Tensor, cols: int) -> None:
    """Draw images (N, 1, 28, 28) on `ax` as one grey grid of `cols` columns, a white pixel between them."""
    canvas = make_grid(images.detach().float().cpu(), nrow=cols, padding=1, pad_value=1.0)[0]  # (rows * 29 + 1, ...)
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def image_rows(images: Tensor, title: str, row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> Figure:
    """A grid of thumbnails from images (R, C, 1, 28, 28), with optional row and column labels."""
    rows, cols = images.shape[:2]
    width = max(4.0, cols * CELL + (1.2 if row_labels else 0.3))
    figure = new_figure(width, rows * CELL + 0.6 + (0.3 if col_labels else 0.0))
    ax = figure.add_subplot()
    show(ax, images.flatten(0, 1), cols)
    centres = [15 + 29 * i for i in range(max(rows, cols))]  # of the thumbnails along an axis of `show`'s grid
    ax.set_xticks(centres[:cols] if col_labels else [], col_labels, fontsize=6, rotation=90 if cols > 12 else 0)
    ax.set_yticks(centres[:rows] if row_labels else [], row_labels, fontsize=7)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    ax.set_title(title, fontsize=9)
    return figure
