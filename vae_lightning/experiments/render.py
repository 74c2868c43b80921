"""Drawing: tensors in, `matplotlib.figure.Figure` out (Agg canvas, no pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from vae_lightning.experiments.figures import image_grid, new_figure

CELL = 0.42  # inches per 28x28 thumbnail


def show(ax, images: Tensor, rows: int, cols: int) -> None:
    """Draw images (rows * cols, 1, 28, 28) as one grey grid on `ax`."""
    ax.imshow(image_grid(images, rows, cols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def image_rows(images: Tensor, title: str, row_labels: Sequence[str] = (), col_labels: Sequence[str] = ()) -> Figure:
    """A grid of thumbnails from images (R, C, 1, 28, 28), with optional row and column labels."""
    rows, cols = images.shape[:2]
    width = max(4.0, cols * CELL + (1.2 if row_labels else 0.3))
    height = rows * CELL + 0.6 + (0.3 if col_labels else 0.0)
    figure = new_figure(width, height)
    ax = figure.add_subplot()
    show(ax, images.flatten(0, 1), rows, cols)
    ax.set_xticks([1 + 29 * c + 14 for c in range(cols)] if col_labels else [])
    ax.set_xticklabels(col_labels, fontsize=6, rotation=90 if cols > 12 else 0)
    ax.set_yticks([1 + 29 * r + 14 for r in range(rows)] if row_labels else [])
    ax.set_yticklabels(row_labels, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=9)
    return figure


def manifold(images: Tensor, values: Tensor, dims: tuple[int, int], title: str) -> Figure:
    """Decodings on a grid (G, G, 1, 28, 28), axes labelled with the latent values."""
    grid = images.shape[0]
    figure = new_figure(grid * CELL + 1.0, grid * CELL + 1.0)
    ax = figure.add_subplot()
    show(ax, images.flatten(0, 1), grid, grid)
    centres = [1 + 29 * i + 14 for i in range(grid)]
    ax.set_xticks(centres, [f"{v + 0.0:.1f}" for v in values.tolist()], fontsize=6, rotation=90)
    ax.set_yticks(centres, [f"{v + 0.0:.1f}" for v in values.flip(0).tolist()], fontsize=6)
    ax.set_xlabel(f"z[{dims[0]}]")
    ax.set_ylabel(f"z[{dims[1]}]")
    ax.set_title(title, fontsize=9)
    return figure


def scatter(
    points: Tensor,
    labels: Tensor,
    title: str,
    axis_names: tuple[str, str],
    box: Tensor,
    decodings: Tensor,
    empty: Tensor,
) -> Figure:
    """Left: latent points (N, 2) coloured by digit, with the box [lows, highs] (2, 2) outlined.
    Right: decodings (G, G, 1, 28, 28) at the centres of the box's cells, [i along x, j along y];
    cells no point falls in (`empty`, (G, G) bool) framed in red."""
    grid = decodings.shape[0]
    figure = new_figure(12.0, 5.6)
    left, right = figure.subplots(1, 2, width_ratios=[1.15, 1])
    colours = matplotlib.colormaps["tab10"]
    for digit in range(10):
        chosen = labels == digit
        left.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=2,
            alpha=0.5,
            color=colours(digit),
            label=str(digit),
            rasterized=True,
        )
    (x0, y0), (x1, y1) = box.tolist()
    left.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--", linewidth=0.8))
    left.legend(title="digit", markerscale=5, fontsize=7, title_fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    left.set_xlabel(axis_names[0])
    left.set_ylabel(axis_names[1])
    left.set_title(title, fontsize=9)
    shown = decodings.transpose(0, 1).flip(0)  # rows: top = largest second coordinate
    show(right, shown.flatten(0, 1), grid, grid)
    for i, j in empty.nonzero().tolist():
        row, col = grid - 1 - j, i
        right.add_patch(Rectangle((29 * col + 0.5, 29 * row + 0.5), 28, 28, fill=False, edgecolor="red", linewidth=1))
    right.set_xticks([])
    right.set_yticks([])
    right.set_title(f"decodings over the dashed box; red: cells without test latents ({int(empty.sum())})", fontsize=9)
    return figure
