"""The explorer's page, a Bokeh server document over an `Explorer`, and the server that serves it.

Bokeh runs the page's events (a tap or the pointer on the map, a slider, a button) as Python callbacks on
the server, next to the model, and pushes the changed data sources back over its websocket: no
hand-written HTTP or JavaScript. Every decoded image's data source is named (`map_decoding`,
`traversal_decoding`, `interpolation_decoding`, `prior_decoding`) and carries the z it decodes, so a
test (or a curious user) can read both from the page.
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
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from vae_lightning.explore.state import Decoding, Explorer

DIGITS = [str(d) for d in range(10)]
PRIOR_GRID = 4  # prior samples drawn as a PRIOR_GRID x PRIOR_GRID sheet


def image_figure(name: str, title: str, size: int = 28, width: int = 220):
    """A square figure showing one grey image from a source named `name` (columns image, z)."""
    source = ColumnDataSource({"image": [np.zeros((size, size), dtype=np.float32)], "z": [[]]}, name=name)
    plot = figure(title=title, width=width, height=width, x_range=(0, size), y_range=(0, size), tools="",
                  toolbar_location=None)  # fmt: skip
    plot.image(image="image", x=0, y=0, dw=size, dh=size, source=source, palette=Greys256, level="image")
    plot.axis.visible = plot.grid.visible = False
    return plot, source


def show(source: ColumnDataSource, verdict: Div, decoding: Decoding) -> None:
    """Put a decoding on the page: pixels (flipped: Bokeh's y axis points up), its z, its judgement."""
    source.data = {"image": [np.flipud(decoding.pixels.numpy())], "z": [decoding.z.tolist()]}
    verdict.text = decoding.verdict


def build(doc, explorer: Explorer, split: str) -> None:
    """Fill a Bokeh document with the four panels; every callback decodes on the server."""
    n = len(explorer.labels)
    title = Div(
        text=f"<h2>vae-lightning explore</h2><p>{n:,} {split} images, {explorer.latent_dim} latents. "
        f"Map: {explorer.plane}."
        + (" A point of the map decodes with the components off the plane at the data mean." if
           explorer.latent_dim > 2 else "") + "</p>",
        name="title",
    )  # fmt: skip

    # ---- latent map: pointing at or tapping any point decodes it
    rows = explorer.labels.argsort(stable=True)  # by digit: the legend lists them 0-9 (its order is the rows')
    points = ColumnDataSource(
        {"x": explorer.points[rows, 0].tolist(), "y": explorer.points[rows, 1].tolist(),
         "digit": [str(int(d)) for d in explorer.labels[rows]], "index": rows.tolist()},
        name="map_points",
    )  # fmt: skip
    latent_map = figure(title=f"posterior means ({explorer.plane})", width=580, height=480, name="latent_map",
                        tools="tap,pan,wheel_zoom,reset", output_backend="webgl")  # fmt: skip
    latent_map.scatter("x", "y", source=points, size=4, alpha=0.6, legend_field="digit",
                       color=factor_cmap("digit", Category10_10, DIGITS))  # fmt: skip
    latent_map.add_layout(latent_map.legend[0], "right")
    cursor = ColumnDataSource({"x": [], "y": []}, name="map_cursor")
    latent_map.scatter("x", "y", source=cursor, marker="cross", size=18, line_width=3, color="black")
    map_image, map_source = image_figure("map_decoding", "decoding of the point")
    map_verdict = Div(text="point at the map", name="map_verdict")

    def decode_point(event) -> None:
        if event.x is None or event.y is None:
            return
        cursor.data = {"x": [event.x], "y": [event.y]}
        show(map_source, map_verdict, explorer.decode(explorer.z_at(event.x, event.y))[0])

    latent_map.on_event(Tap, decode_point)
    latent_map.on_event(MouseMove, decode_point)

    # ---- traversal: an image's mu, one slider per (most active) dimension
    index = Spinner(title="image index (or tap its point)", low=0, high=n - 1, step=1, value=0, width=200,
                    name="traversal_index")  # fmt: skip
    low, high = explorer.mu.min(0).values, explorer.mu.max(0).values
    sliders = {
        dim: Slider(
            title=f"z[{dim}] (variance of mu {explorer.activity[dim]:.2f})",
            step=0.01,
            value=0.0,
            start=round(min(-4.0, float(low[dim]) - 1), 2),
            end=round(max(4.0, float(high[dim]) + 1), 2),
            width=300,
            name=f"traversal_z{dim}",
        )  # fmt: skip
        for dim in explorer.slider_dims
    }
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

    # ---- interpolation between two images, with the seed's shared-eps option
    hits = [(explorer.labels == digit).nonzero() for digit in (4, 9)]  # the seed's pair, where the split has them
    first_of = [int(found[0]) if len(found) else 0 for found in hits]
    first = Spinner(title="from image", low=0, high=n - 1, step=1, value=first_of[0], width=120, name="interp_from")
    second = Spinner(title="to image", low=0, high=n - 1, step=1, value=first_of[1], width=120, name="interp_to")
    t = Slider(title="t", start=0.0, end=1.0, step=0.01, value=0.5, width=300, name="interp_t")
    shared = Checkbox(label="shared eps: z = mu + eps * sigma at both ends, one eps (the seed's)", name="interp_shared")
    new_eps = Button(label="new eps", width=100, name="interp_new_eps")
    interp_image, interp_source = image_figure("interpolation_decoding", "interpolation")
    interp_verdict = Div(name="interp_verdict")
    eps = [torch.randn(explorer.latent_dim, generator=torch.Generator().manual_seed(0))]

    def decode_interpolation() -> None:
        z = explorer.interpolation_z(int(first.value), int(second.value), t.value, eps[0] if shared.active else None)
        show(interp_source, interp_verdict, explorer.decode(z)[0])

    def interpolation_changed(attr, old, new) -> None:
        decode_interpolation()

    def draw_eps() -> None:
        eps[0] = torch.randn(explorer.latent_dim)
        decode_interpolation()

    for widget in (first, second, t):
        widget.on_change("value", interpolation_changed)
    shared.on_change("active", interpolation_changed)
    new_eps.on_click(draw_eps)

    # ---- prior samples on demand
    draw = Button(label=f"draw {PRIOR_GRID * PRIOR_GRID} samples of z ~ N(0, I)", width=260, name="prior_draw")
    sheet, sheet_source = image_figure("prior_decoding", "prior samples", size=28 * PRIOR_GRID, width=300)
    sheet_verdicts = Div(name="prior_verdicts")
    draws = [0]

    def draw_prior() -> None:
        draws[0] += 1
        decodings = explorer.decode(explorer.prior_z(PRIOR_GRID * PRIOR_GRID, seed=draws[0]))
        tiles = [d.pixels.numpy() for d in decodings]
        rows = [np.concatenate(tiles[r * PRIOR_GRID : (r + 1) * PRIOR_GRID], axis=1) for r in range(PRIOR_GRID)]
        sheet_source.data = {"image": [np.flipud(np.concatenate(rows, axis=0))],
                             "z": [[d.z.tolist() for d in decodings]]}  # fmt: skip
        clear = sum(d.clear for d in decodings)
        sheet_verdicts.text = (f"{clear} of {len(decodings)} judged a clear digit; row by row: "
                               + ", ".join(str(d.digit) if d.clear else "?" for d in decodings))  # fmt: skip

    draw.on_click(draw_prior)

    doc.title = "vae-lightning explore"
    doc.add_root(
        column(
            title,
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
    centre = explorer.points.mean(0)
    decode_point(Tap(latent_map, x=float(centre[0]), y=float(centre[1])))
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

    Built from Bokeh's public pieces (`BokehTornado`, `BaseServer`) around an HTTP server that keeps its
    connections, so that the page's websocket sends each frame at once. Bokeh writes a message as several
    frames (header, metadata, content, buffers); with Nagle's algorithm on, each frame after the first waits
    for the browser's delayed acknowledgement: most of a slider's round trip (docs/performance.md). Bokeh has
    no setting for TCP_NODELAY, and Tornado (6.6) turns it off as each HTTP request on a connection ends, the
    websocket's upgrade included, so a listening socket's option (which Linux passes on to the connections it
    accepts) does not last. Once a page is ready, which it says over its open websocket, every open connection
    gets TCP_NODELAY; a plain HTTP connection goes back to Tornado's default at its next request.
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
