"""The explorer's page, a Bokeh server document over an `Explorer`, and the server that serves it.

The page's events run as Python callbacks on the server, next to the model; Bokeh pushes the changed data sources
back over its websocket. Each decoding's source is named (`map_decoding`, `traversal_decoding`, ...) and holds the
z it decodes, so a test can read both from the page.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch
from bokeh.application import Application
from bokeh.application.handlers.function import FunctionHandler
from bokeh.events import DocumentReady, MouseMove, Tap
from bokeh.layouts import column, row
from bokeh.models import Button, Checkbox, ColumnDataSource, Div, Slider, Spinner
from bokeh.palettes import Category10_10, Greys256
from bokeh.plotting import figure
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from bokeh.transform import factor_cmap
from torchvision.utils import make_grid
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from vae_lightning.explore.state import Decoding, Explorer

PRIOR_GRID = 4  # prior samples drawn as a PRIOR_GRID x PRIOR_GRID sheet


def image_figure(name: str, title: str, size: int = 28, width: int = 220):
    """A square figure showing one grey image from a source named `name` (columns image, z)."""
    source = ColumnDataSource({"image": [np.zeros((size, size), dtype=np.float32)], "z": [[]]}, name=name)
    plot = figure(
        title=title, width=width, height=width, x_range=(0, size), y_range=(0, size), tools="", toolbar_location=None
    )
    plot.image(image="image", x=0, y=0, dw=size, dh=size, source=source, palette=Greys256, level="image")
    plot.axis.visible = plot.grid.visible = False
    return plot, source


def show(source: ColumnDataSource, verdict: Div, decoding: Decoding) -> None:
    """Put a decoding on the page: pixels (flipped: Bokeh's y axis points up), its z, its judgement."""
    source.data = {"image": [np.flipud(decoding.pixels.numpy())], "z": [decoding.z.tolist()]}
    verdict.text = decoding.verdict


def build(doc, explorer: Explorer, split: str) -> None:
    """Fill a Bokeh document with the four panels; every callback decodes on the server."""
    n, latents, plane = len(explorer.labels), explorer.latent_dim, explorer.plane
    note = " A point of the map decodes with the components off the plane at the data mean." if latents > 2 else ""
    intro = f"<h2>vae-lightning explore</h2><p>{n:,} {split} images, {latents} latents. Map: {plane}.{note}</p>"

    # ---- latent map: pointing at or tapping any point decodes it
    rows = explorer.labels.argsort(stable=True)  # by digit: the legend lists them 0-9 (its order is the rows')
    x, y = explorer.points[rows].T.tolist()
    digits = [str(d) for d in explorer.labels[rows].tolist()]
    points = ColumnDataSource({"x": x, "y": y, "digit": digits, "index": rows.tolist()}, name="map_points")
    tools = "tap,pan,wheel_zoom,reset"
    latent_map = figure(
        title="posterior means", width=580, height=480, tools=tools, name="latent_map", output_backend="webgl"
    )
    colors = factor_cmap("digit", Category10_10, [str(d) for d in range(10)])
    latent_map.scatter("x", "y", source=points, size=4, alpha=0.6, legend_field="digit", color=colors)
    latent_map.add_layout(latent_map.legend[0], "right")
    cursor = ColumnDataSource({"x": [], "y": []}, name="map_cursor")
    latent_map.scatter("x", "y", source=cursor, marker="cross", size=18, line_width=3, color="black")
    map_image, map_source = image_figure("map_decoding", "decoding of the point")
    map_verdict = Div(text="point at the map", name="map_verdict")

    def decode_point(event) -> None:
        if event.x is not None and event.y is not None:
            cursor.data = {"x": [event.x], "y": [event.y]}
            show(map_source, map_verdict, explorer.decode(explorer.z_at(event.x, event.y))[0])

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
    original_image, original_source = image_figure("traversal_original", "the image", width=120)
    loading = [False]  # set while a new image resets the sliders, so they decode once, not once each

    def decode_traversal() -> None:
        values = {dim: slider.value for dim, slider in sliders.items()}
        show(traversal_source, traversal_verdict, explorer.decode(explorer.traversal_z(int(index.value), values))[0])

    def load_image(attr, old, new) -> None:
        if new is None:
            return
        i = int(new)
        original_source.data = {"image": [np.flipud(explorer.images[i, 0].numpy())], "z": [explorer.mu[i].tolist()]}
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
            index.value = int(points.data["index"][new[0]])  # the tapped row's image

    index.on_change("value", load_image)
    for slider in sliders.values():
        slider.on_change("value", slider_moved)
    points.selected.on_change("indices", point_selected)

    # ---- interpolation between two images (the seed's pair, a 4 and a 9, where the split has them)
    ends = [int(found[0]) if len(found := (explorer.labels == digit).nonzero()) else 0 for digit in (4, 9)]
    first = Spinner(title="from image", low=0, high=n - 1, step=1, value=ends[0], width=120, name="interp_from")
    second = Spinner(title="to image", low=0, high=n - 1, step=1, value=ends[1], width=120, name="interp_to")
    t = Slider(title="t", start=0.0, end=1.0, step=0.01, value=0.5, width=300, name="interp_t")
    shared = Checkbox(label="shared eps: z = mu + eps * sigma at both ends, one eps (the seed's)", name="interp_shared")
    new_eps = Button(label="new eps", width=100, name="interp_new_eps")
    interp_image, interp_source = image_figure("interpolation_decoding", "interpolation")
    interp_verdict = Div(name="interp_verdict")
    eps = [torch.randn(latents, generator=torch.Generator().manual_seed(0))]

    def decode_interpolation() -> None:
        z = explorer.interpolation_z(int(first.value), int(second.value), t.value, eps[0] if shared.active else None)
        show(interp_source, interp_verdict, explorer.decode(z)[0])

    def draw_eps() -> None:
        eps[0] = torch.randn(latents)
        decode_interpolation()

    for widget, attribute in ((first, "value"), (second, "value"), (t, "value"), (shared, "active")):
        widget.on_change(attribute, lambda attr, old, new: decode_interpolation())
    new_eps.on_click(draw_eps)

    # ---- prior samples on demand
    draw = Button(label=f"draw {PRIOR_GRID**2} samples of z ~ N(0, I)", width=260, name="prior_draw")
    sheet, sheet_source = image_figure("prior_decoding", "prior samples", size=28 * PRIOR_GRID, width=300)
    sheet_verdicts = Div(name="prior_verdicts")
    draws = [0]

    def draw_prior() -> None:
        draws[0] += 1
        z = torch.randn(PRIOR_GRID**2, latents, generator=torch.Generator().manual_seed(draws[0]))  # (16, L)
        decodings = explorer.decode(z)
        tiles = make_grid(torch.stack([d.pixels for d in decodings]).unsqueeze(1), PRIOR_GRID, padding=0)[0]
        sheet_source.data = {"image": [np.flipud(tiles.numpy())], "z": [z.tolist()]}  # a (112, 112) sheet
        clear, judged = sum(d.clear for d in decodings), ", ".join(str(d.digit) if d.clear else "?" for d in decodings)
        sheet_verdicts.text = f"{clear} of {len(decodings)} judged a clear digit; row by row: {judged}"

    draw.on_click(draw_prior)

    doc.title = "vae-lightning explore"
    doc.add_root(
        column(
            Div(text=intro, name="title"),
            row(latent_map, column(map_image, map_verdict)),
            Div(text="<h3>Traversal</h3><p>Each slider starts at the image's mu (most active dimensions first).</p>"),
            row(column(index, original_image), column(*sliders.values()), column(traversal_image, traversal_verdict)),
            Div(text="<h3>Interpolation</h3>"),
            row(column(row(first, second), t, shared, new_eps), column(interp_image, interp_verdict)),
            Div(text="<h3>Prior samples</h3>"),
            row(column(draw, sheet_verdicts), sheet),
        )
    )
    load_image("value", None, 0)
    centre = explorer.points.mean(0).tolist()
    decode_point(Tap(latent_map, x=centre[0], y=centre[1]))
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
    """Start a Bokeh server of the page on listening `sockets`, for pages from `origins` ("host:port").

    Bokeh writes a message as several websocket frames; with Nagle's algorithm each after the first waits for the
    browser's delayed acknowledgement (docs/performance.md). Bokeh has no TCP_NODELAY setting and Tornado (6.6)
    clears it as each HTTP request ends, the websocket's upgrade included; so the HTTP server keeps its connections
    and, once a page says it is ready, every open one gets TCP_NODELAY.
    """

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
