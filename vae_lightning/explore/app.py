"""The explorer's page: a Bokeh document whose callbacks decode on the server, next to the model, and its server.
Each decoding's data source (`map_decoding`, `traversal_decoding`, ...) holds the z it shows, for tests to read."""

import weakref

import numpy as np
import torch
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
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
from vae_lightning.experiments.classifier import NO_DIGIT, DigitClassifier, judge

PRIOR_GRID = 4  # prior samples drawn as a PRIOR_GRID x PRIOR_GRID sheet


class Explorer:
    """A model and the digit classifier over a split's images (N, 1, 28, 28) in [0, 1] and digits (N,): their posterior
    means, mapped as `LatentScatter` draws them; the `max_sliders` most active dimensions get a traversal slider."""

    def __init__(self, model, images: Tensor, labels: Tensor, classifier: DigitClassifier, max_sliders: int):
        self.model, self.images, self.labels, self.classifier = model, images, labels, classifier
        self.mu = compute.encode_images(model, images)[0]  # (N, L) posterior means
        self.origin, axes, self.plane = compute.plane_of(self.mu)
        self.points = compute.project(self.mu, self.origin, axes)  # (N, 2)
        self.inverse = torch.linalg.pinv(axes)  # (L, 2): a map point's latent, by least squares
        self.activity = self.mu.var(0) if len(self.mu) > 1 else torch.zeros(self.mu.shape[1])  # (L,)
        self.slider_dims = self.activity.argsort(descending=True)[:max_sliders].tolist()


def image_figure(name: str, title: str, size: int = 28, width: int = 220):
    """A square figure showing one grey image from a source named `name` (columns image, z)."""
    source = ColumnDataSource({"image": [np.zeros((size, size), dtype=np.float32)], "z": [[]]}, name=name)
    plot = figure(
        title=title, width=width, height=width, x_range=(0, size), y_range=(0, size), tools="", toolbar_location=None
    )
    plot.image(image="image", x=0, y=0, dw=size, dh=size, source=source, palette=Greys256, level="image")
    plot.axis.visible = plot.grid.visible = False
    return plot, source


def build(doc, explorer: Explorer, split: str) -> None:
    """Fill a Bokeh document with the four panels; every callback decodes on the server."""
    (n, latents), plane = explorer.mu.shape, explorer.plane
    note = "; a point of it decodes with the components off the plane at the data mean" if latents > 2 else ""
    intro = f"<h2>vae-lightning explore</h2><p>{n:,} {split} images, {latents} latents. Map of mu: {plane}{note}.</p>"
    generator = torch.Generator().manual_seed(1)  # the page's prior samples

    def show(source: ColumnDataSource, judgement: Div, z: Tensor) -> None:
        """Decode z (L,) onto the page: pixels (flipped: Bokeh's y axis points up), z and the classifier's verdict."""
        pixels = compute.decode_latents(explorer.model, z[None])  # (1, 1, 28, 28)
        judged = judge(explorer.classifier, pixels)
        source.data = {"image": [np.flipud(pixels[0, 0].numpy())], "z": [z.tolist()]}
        digit, p, clear = judged.digit.item(), judged.probs.max().item(), judged.clear.item()
        said = "no digit" if digit == NO_DIGIT else f"judged {digit}, {'clear' if clear else 'not clear'}"
        judgement.text = f"{said} (p = {p:.2f})"

    # ---- latent map: pointing at or tapping any point decodes it
    rows = explorer.labels.argsort(stable=True)  # by digit: the legend lists them 0-9 (its order is the rows')
    x, y = explorer.points[rows].T.tolist()
    digits = [str(d) for d in explorer.labels[rows].tolist()]
    points = ColumnDataSource({"x": x, "y": y, "digit": digits, "index": rows.tolist()}, name="map_points")
    latent_map = figure(width=580, height=480, tools="tap,pan,wheel_zoom,reset", name="map", output_backend="webgl")
    colors = factor_cmap("digit", Category10_10, list("0123456789"))
    latent_map.scatter("x", "y", source=points, size=4, alpha=0.6, legend_field="digit", color=colors)
    latent_map.add_layout(latent_map.legend[0], "right")
    map_image, map_source = image_figure("map_decoding", "decoding of the point")
    map_verdict = Div(text="point at the map", name="map_verdict")

    def decode_point(event) -> None:
        if event.x is not None and event.y is not None:
            show(map_source, map_verdict, explorer.origin + explorer.inverse @ torch.tensor([event.x, event.y]))

    latent_map.on_event(Tap, decode_point)
    latent_map.on_event(MouseMove, decode_point)

    # ---- traversal: an image's mu, one slider per (most active) dimension
    index = Spinner(title="image index (or tap its point)", low=0, high=n - 1, step=1, value=0, name="traversal_index")
    low, high = explorer.mu.min(0).values.tolist(), explorer.mu.max(0).values.tolist()
    sliders = {}
    for dim in explorer.slider_dims:
        start, end = round(min(-4.0, low[dim] - 1), 2), round(max(4.0, high[dim] + 1), 2)
        text = f"z[{dim}] (variance of mu {explorer.activity[dim]:.2f})"
        sliders[dim] = Slider(title=text, start=start, end=end, step=0.01, value=0, width=300, name=f"traversal_z{dim}")
    traversal_image, traversal_source = image_figure("traversal_decoding", "traversal")
    traversal_verdict = Div(name="traversal_verdict")
    original_image, original = image_figure("traversal_original", "the image", width=120)
    loading = [False]  # set while a new image resets the sliders, so they decode once, not once each

    def decode_traversal() -> None:
        z = explorer.mu[int(index.value)].clone()
        z[list(sliders)] = torch.tensor([slider.value for slider in sliders.values()])
        show(traversal_source, traversal_verdict, z)

    def load_image(attr, old, new) -> None:
        if new is not None:  # None: the spinner was cleared
            i = int(new)
            original.data = {"image": [np.flipud(explorer.images[i, 0].numpy())], "z": [explorer.mu[i].tolist()]}
            loading[0] = True
            for dim, slider in sliders.items():
                slider.value = round(float(explorer.mu[i, dim]), 2)
            loading[0] = False
            decode_traversal()

    def slider_moved(attr, old, new) -> None:
        if not loading[0]:
            decode_traversal()

    def point_selected(attr, old, new) -> None:
        if new:
            index.value = points.data["index"][new[0]]  # the tapped row's image

    index.on_change("value", load_image)
    for slider in sliders.values():
        slider.on_change("value", slider_moved)
    points.selected.on_change("indices", point_selected)

    # ---- interpolation between two images (the seed's pair, a 4 and a 9, where the split has them)
    ends = [int(found[0]) if len(found := (explorer.labels == digit).nonzero()) else 0 for digit in (4, 9)]
    first = Spinner(title="from image", low=0, high=n - 1, step=1, value=ends[0], width=120, name="interp_from")
    second = Spinner(title="to image", low=0, high=n - 1, step=1, value=ends[1], width=120, name="interp_to")
    t = Slider(title="t", start=0.0, end=1.0, step=0.01, value=0.5, width=300, name="interp_t")
    interp_image, interp_source = image_figure("interpolation_decoding", "interpolation")
    interp_verdict = Div(name="interp_verdict")

    def decode_interpolation() -> None:
        z1, z2 = explorer.mu[int(first.value)], explorer.mu[int(second.value)]
        show(interp_source, interp_verdict, torch.lerp(z1, z2, t.value))  # (1 - t) z1 + t z2

    for widget in (first, second, t):
        widget.on_change("value", lambda attr, old, new: decode_interpolation())

    # ---- prior samples on demand
    draw = Button(label=f"draw {PRIOR_GRID**2} samples of z ~ N(0, I)", width=260, name="prior_draw")
    sheet, sheet_source = image_figure("prior_decoding", "prior samples", size=28 * PRIOR_GRID, width=300)
    sheet_verdicts = Div(name="prior_verdicts")

    def draw_prior() -> None:
        z = torch.randn(PRIOR_GRID**2, latents, generator=generator)  # (16, L)
        pixels = compute.decode_latents(explorer.model, z)  # (16, 1, 28, 28)
        judged = judge(explorer.classifier, pixels)
        tiles = make_grid(pixels, PRIOR_GRID, padding=0)[0]  # a (112, 112) sheet
        sheet_source.data = {"image": [np.flipud(tiles.numpy())], "z": [z.tolist()]}
        seen = ", ".join(str(d) if c else "?" for d, c in zip(judged.digit.tolist(), judged.clear.tolist()))
        sheet_verdicts.text = f"{int(judged.clear.sum())} of {len(z)} judged a clear digit; row by row: {seen}"

    draw.on_click(draw_prior)

    doc.title = "vae-lightning explore"
    doc.add_root(
        column(
            Div(text=intro, name="title"),
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


class StreamKeepingHTTPServer(HTTPServer):
    """Tornado's HTTP server, keeping (weakly) the stream of every connection it accepts in `streams`."""

    def initialize(self, *args, **kwargs) -> None:
        super().initialize(*args, **kwargs)
        self.streams = weakref.WeakSet()

    def handle_stream(self, stream, address) -> None:
        self.streams.add(stream)
        super().handle_stream(stream, address)


def serve(explorer: Explorer, split: str, sockets: list, origins: list[str]) -> BaseServer:
    """Start a Bokeh server of the page on listening `sockets`, for pages from `origins` ("host:port"). Bokeh writes
    a message as several websocket frames, each held by Nagle's algorithm until the browser's delayed ACK (see
    docs/performance.md), and Tornado 6.6 clears TCP_NODELAY as each request ends: a ready page's connections get it."""

    def send_at_once(event: DocumentReady) -> None:
        for stream in http.streams:
            if not stream.closed():
                stream.set_nodelay(True)

    def page(doc) -> None:
        build(doc, explorer, split)
        doc.on_event(DocumentReady, send_at_once)

    application = BokehTornado({"/": Application(FunctionHandler(page))}, extra_websocket_origins=origins)
    http = StreamKeepingHTTPServer(application)
    http.add_sockets(sockets)
    server = BaseServer(IOLoop.current(), application, http)
    server.start()
    return server
