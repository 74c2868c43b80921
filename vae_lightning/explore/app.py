"""The explorer's page, a Bokeh document whose callbacks decode on the server (next to the model), and its server."""

import weakref

import numpy as np
import torch
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.document import Document
from bokeh.events import DocumentReady, MouseMove, Tap
from bokeh.layouts import column, row
from bokeh.models import Button, ColumnDataSource, Div, Slider, Spinner
from bokeh.palettes import Category10_10, Greys256
from bokeh.plotting import figure
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from bokeh.transform import factor_cmap
from torch import Tensor
from torchvision.utils import make_grid
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from vae_lightning.experiments import compute
from vae_lightning.experiments.base import ExperimentData
from vae_lightning.experiments.classifier import NO_DIGIT

PRIOR_GRID = 4  # prior samples drawn as a PRIOR_GRID x PRIOR_GRID sheet


def image_figure(name: str, title: str, size: int = 28, width: int = 220):
    """A square figure showing one grey image from a source named `name` (columns image, z: what tests read)."""
    source = ColumnDataSource({"image": [np.zeros((size, size), dtype=np.float32)], "z": [[]]}, name=name)
    span = (0, size)  # of both axes, in pixels
    plot = figure(title=title, width=width, height=width, x_range=span, y_range=span, tools="", toolbar_location=None)
    plot.image(image="image", x=0, y=0, dw=size, dh=size, source=source, palette=Greys256, level="image")
    plot.axis.visible = plot.grid.visible = False
    return plot, source


def build(doc, model, data: ExperimentData, split: str, max_sliders: int) -> None:
    """Fill a Bokeh document with the four panels over a split's `data`; every callback decodes on the server."""
    mu = data.posterior_of(model)[0]  # (N, L) posterior means, encoded once for every page
    (n, latents), (origin, axes, plane) = mu.shape, compute.plane_of(mu)
    note = "; a point of it decodes with the components off the plane at the data mean" if latents > 2 else ""
    intro = f"{n:,} {split} images, {latents} latents. Map of mu: {plane}{note}."
    generator = torch.Generator().manual_seed(1)  # the page's prior samples

    def show(source: ColumnDataSource, verdict: Div, z: Tensor) -> None:
        """Decode z (K, L) onto the page: a sheet of PRIOR_GRID columns (flipped: Bokeh's y up), z and the verdict."""
        pixels = compute.decode_latents(model, z)  # (K, 1, 28, 28)
        sheet = make_grid(pixels, PRIOR_GRID, padding=0)[0]  # (28, 28) for one z
        source.data = {"image": [np.flipud(sheet.numpy())], "z": [z.squeeze(0).tolist()]}  # one z as (L,)
        judged = data.judge(pixels)
        if len(z) > 1:
            seen = ", ".join(str(d) if c else "?" for d, c in zip(judged.digit.tolist(), judged.clear.tolist()))
            verdict.text = f"{int(judged.clear.sum())} of {len(z)} judged a clear digit; row by row: {seen}"
        else:
            digit, p, clear = judged.digit.item(), judged.probs.max().item(), judged.clear.item()
            said = "no digit" if digit == NO_DIGIT else f"judged {digit}, {'clear' if clear else 'not clear'}"
            verdict.text = f"{said} (p = {p:.2f})"

    # ---- latent map: pointing at or tapping any point decodes it
    rows = data.labels.argsort(stable=True)  # by digit: the legend lists them 0-9 (its order is the rows')
    x, y = ((mu - origin) @ axes.T)[rows].T.tolist()
    digits = [str(d) for d in data.labels[rows].tolist()]
    points = ColumnDataSource({"x": x, "y": y, "digit": digits, "index": rows.tolist()}, name="map_points")
    latent_map = figure(width=580, height=480, tools="tap,pan,wheel_zoom,reset", name="map", output_backend="webgl")
    colors = factor_cmap("digit", Category10_10, list("0123456789"))
    latent_map.scatter("x", "y", source=points, size=4, alpha=0.6, legend_field="digit", color=colors)
    latent_map.add_layout(latent_map.legend[0], "right")
    map_image, map_source = image_figure("map_decoding", "decoding of the point")
    map_verdict = Div(text="point at the map", name="map_verdict")
    inverse = torch.linalg.pinv(axes)  # (L, 2): a map point's latent, by least squares

    def decode_point(event) -> None:
        if event.x is not None and event.y is not None:
            show(map_source, map_verdict, (origin + inverse @ torch.tensor([event.x, event.y]))[None])

    latent_map.on_event(Tap, decode_point)
    latent_map.on_event(MouseMove, decode_point)

    # ---- traversal: an image's mu, one slider per (most active) dimension
    index = Spinner(title="image index (or tap its point)", low=0, high=n - 1, step=1, value=0, name="traversal_index")
    activity = mu.var(0) if n > 1 else torch.zeros(latents)  # (L,)
    sliders = {}
    for dim in activity.argsort(descending=True)[:max_sliders].tolist():
        start, end = round(min(-4.0, mu[:, dim].min().item() - 1), 2), round(max(4.0, mu[:, dim].max().item() + 1), 2)
        text = f"z[{dim}] (variance of mu {activity[dim]:.2f})"
        sliders[dim] = Slider(title=text, start=start, end=end, step=0.01, value=0, width=300, name=f"traversal_z{dim}")
    traversal_image, traversal_source = image_figure("traversal_decoding", "traversal")
    traversal_verdict = Div(name="traversal_verdict")
    original_image, original = image_figure("traversal_original", "the image", width=120)
    loading = [False]  # set while a new image resets the sliders, so they decode once, not once each

    def decode_traversal() -> None:
        if not loading[0]:
            z = mu[int(index.value)].clone()
            z[list(sliders)] = torch.tensor([slider.value for slider in sliders.values()])
            show(traversal_source, traversal_verdict, z[None])

    def load_image(attr, old, new) -> None:
        if new is not None:  # None: the spinner was cleared
            i = int(new)
            original.data = {"image": [np.flipud(data.images[i, 0].numpy())], "z": [mu[i].tolist()]}
            loading[0] = True
            for dim, slider in sliders.items():
                slider.value = round(float(mu[i, dim]), 2)
            loading[0] = False
            decode_traversal()

    def point_selected(attr, old, new) -> None:
        if new:
            index.value = points.data["index"][new[0]]  # the tapped row's image

    index.on_change("value", load_image)
    for slider in sliders.values():
        slider.on_change("value", lambda attr, old, new: decode_traversal())
    points.selected.on_change("indices", point_selected)

    # ---- interpolation between two images (the seed's pair, a 4 and a 9, where the split has them)
    ends = [data.first_of_each_digit().get(digit, 0) for digit in (4, 9)]
    first = Spinner(title="from image", low=0, high=n - 1, step=1, value=ends[0], width=120, name="interp_from")
    second = Spinner(title="to image", low=0, high=n - 1, step=1, value=ends[1], width=120, name="interp_to")
    t = Slider(title="t", start=0.0, end=1.0, step=0.01, value=0.5, width=300, name="interp_t")
    interp_image, interp_source = image_figure("interpolation_decoding", "interpolation")
    interp_verdict = Div(name="interp_verdict")

    def decode_interpolation() -> None:
        z1, z2 = mu[int(first.value)], mu[int(second.value)]
        show(interp_source, interp_verdict, torch.lerp(z1, z2, t.value)[None])  # (1 - t) z1 + t z2

    for widget in (first, second, t):
        widget.on_change("value", lambda attr, old, new: decode_interpolation())

    # ---- prior samples on demand
    draw = Button(label=f"draw {PRIOR_GRID**2} samples of z ~ N(0, I)", width=260, name="prior_draw")
    sheet, sheet_source = image_figure("prior_decoding", "prior samples", size=28 * PRIOR_GRID, width=300)
    sheet_verdicts = Div(name="prior_verdicts")

    def draw_prior() -> None:
        show(sheet_source, sheet_verdicts, torch.randn(PRIOR_GRID**2, latents, generator=generator))  # (16, L)

    draw.on_click(draw_prior)

    doc.title = "vae-lightning explore"
    doc.add_root(
        column(
            Div(text=f"<h2>vae-lightning explore</h2><p>{intro}</p>", name="title"),
            row(latent_map, column(map_image, map_verdict)),
            Div(text="<h3>Traversal</h3><p>Each slider starts at the image's mu (most active dimensions first).</p>"),
            row(column(index, original_image), column(*sliders.values()), column(traversal_image, traversal_verdict)),
            Div(text="<h3>Interpolation</h3>"),
            row(column(row(first, second), t), column(interp_image, interp_verdict)),
            Div(text="<h3>Prior samples</h3>"),
            row(column(draw, sheet_verdicts), sheet),
        )
    )
    load_image("value", None, 0)
    decode_interpolation()
    draw_prior()


def serve(sockets: list, origins: list[str], **page) -> BaseServer:
    """Start a Bokeh server of `build(doc, **page)` on listening `sockets`, for pages from `origins` ("host:port").
    Bokeh writes a message as several websocket frames, each held by Nagle's algorithm until the browser's delayed ACK
    (docs/performance.md); Tornado 6.6 clears TCP_NODELAY as each request ends, so a ready page's connections get it."""
    streams = weakref.WeakSet()  # of every connection the server accepts

    class StreamKeepingHTTPServer(HTTPServer):
        def handle_stream(self, stream, address) -> None:
            streams.add(stream)
            super().handle_stream(stream, address)

    def send_at_once(event: DocumentReady) -> None:
        for stream in streams:
            stream.set_nodelay(True)  # a no-op on a closed stream

    def new_page(doc) -> None:
        build(doc, **page)
        doc.on_event(DocumentReady, send_at_once)

    build(Document(), **page)  # a first page: the split encoded and the classifier loaded before any page asks
    application = BokehTornado({"/": Application(FunctionHandler(new_page))}, extra_websocket_origins=origins)
    http = StreamKeepingHTTPServer(application)
    http.add_sockets(sockets)
    server = BaseServer(IOLoop.current(), application, http)
    server.start()
    return server
