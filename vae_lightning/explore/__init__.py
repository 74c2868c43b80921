"""`vae-lightning explore --ckpt_path CKPT`: a local latent-space explorer in the browser.

    vae-lightning explore --ckpt_path logs/two_latent/version_0/checkpoints/last.ckpt   # then open the URL it prints

Loads the checkpoint (weights only: no code from it runs), encodes a split of MNIST as the model saw it
(the checkpoint's data settings; `--data_dir` to read the files elsewhere) and serves a page with four
panels: the latent map, a traversal, an interpolation and prior samples, every decoding judged by the
package's digit classifier. Bound to 127.0.0.1 unless `--host` says otherwise.

The page is a Bokeh server app (`vae_lightning.explore.app`), an optional extra:
`pip install -e ".[explore]"`. Without it the rest of the package works, and this command says what to install.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Literal

from jsonargparse import ArgumentParser

from vae_lightning.errors import ConfigError, check_int, explain

INSTALL = 'vae-lightning explore needs the explore extra (Bokeh): pip install -e ".[explore]"'


def send_websocket_frames_at_once() -> None:
    """Turn off Nagle's algorithm on the Bokeh server's websockets (`set_nodelay(True)` as each one opens).

    Bokeh writes each message as several websocket frames (header, metadata, content, buffers) and leaves
    tornado's default, Nagle's algorithm on: each frame after the first then waits for the browser's
    delayed acknowledgement (about 40 ms on Linux) before it leaves, and that wait, not the decoding, is
    most of a slider's round trip (docs/performance.md). Tornado's documentation advises
    `set_nodelay(True)` for websockets that send small messages; Bokeh has no setting for it, so its
    handler's `open` is wrapped once, in this process, to call it first.
    """
    from bokeh.server.views.ws import WSHandler

    if getattr(WSHandler.open, "sets_nodelay", False):
        return
    bokeh_open = WSHandler.open

    def open_without_delay(self, *args, **kwargs):
        self.set_nodelay(True)
        return bokeh_open(self, *args, **kwargs)

    open_without_delay.sets_nodelay = True
    WSHandler.open = open_without_delay


def check_port(host: str, port: int) -> None:
    """Refuse, before any work, a port that another program holds (or that this user may not bind)."""
    check_int("--port", port, minimum=1, fix="e.g. --port 5006")
    if port > 65535:
        raise ConfigError(f"--port {port}: ports go up to 65535; choose one below, e.g. --port 5006.")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"--port {port}: already in use on {host} (another explorer, or another program): "
                    f"choose a free one, e.g. --port {port + 1}."
                ) from err
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({err.strerror}).") from err


def explore(
    ckpt_path: str,
    split: Literal["train", "val", "test"] = "test",
    data_dir: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5006,
    max_sliders: int = 10,
    device: str = "auto",
    download: bool = True,
    run: bool = True,
):
    """Serve the explorer for a checkpoint until interrupted; returns the (started) server when `run` is false.

    Args:
        ckpt_path: a checkpoint the package wrote (any of its models: MLP or CNN, any latent size).
        split: the images shown: `test` (the 10,000 official test images), `val` or `train`.
        data_dir: the folder holding MNIST/raw (default: the checkpoint's, else the usual default).
        host: the address to listen on; 127.0.0.1 keeps the page on this machine.
        port: the port to listen on.
        max_sliders: traversal sliders, the most active latent dimensions first.
        device: `auto`, `cpu` or `cuda` for the model.
        download: fetch MNIST if missing.
        run: serve until interrupted (false: start the server and return it, for tests).
    """
    try:  # the extra: checked first, so a missing install is said before any work
        from bokeh.application import Application
        from bokeh.application.handlers.function import FunctionHandler
        from bokeh.server.server import Server
    except ImportError as err:
        raise ConfigError(INSTALL) from err
    import torch

    from vae_lightning.data import MNISTDataModule
    from vae_lightning.experiments.callbacks import digit_classifier
    from vae_lightning.experiments.command import load_model, resolve_device
    from vae_lightning.explore.app import build
    from vae_lightning.explore.state import Explorer

    check_int("--max_sliders", max_sliders, fix="e.g. --max_sliders 10")
    check_port(host, port)
    model, checkpoint = load_model(ckpt_path, resolve_device(device))  # refused by name if missing, foreign, ...
    data_hparams = {k: v for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    data_hparams.update(download=download, predict_split=split, **({"data_dir": data_dir} if data_dir else {}))
    datamodule = MNISTDataModule(**data_hparams)
    datamodule.prepare_data()
    datamodule.setup("predict")
    images, labels = datamodule.splits[split]
    if not len(labels):
        raise ConfigError(f"--split {split}: the checkpoint's data holds no {split} images; choose test.")
    classifier, _ = digit_classifier(os.fspath(datamodule.data_dir))
    explorer = Explorer(model, images.float().div(255).unsqueeze(1).cpu(), labels.cpu(), classifier, max_sliders)

    send_websocket_frames_at_once()
    origins = ["*"] if host in ("0.0.0.0", "::") else [f"{host}:{port}", f"localhost:{port}", f"127.0.0.1:{port}"]
    server = Server(
        {"/": Application(FunctionHandler(lambda doc: build(doc, explorer, split)))},
        address=host, port=port, allow_websocket_origin=origins, num_procs=1,
    )  # fmt: skip
    server.start()
    shown = f"[{host}]" if ":" in host else host
    print(f"vae-lightning explore: serving {ckpt_path} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if not run:
        return server
    # Each request decodes and judges a handful of images: one core answers at once, where a team of
    # intra-op threads waits for cores that another program (a training run, say) holds.
    torch.set_num_threads(1)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return None


def main(args: list[str] | None = None) -> None:
    """`vae-lightning explore ...`: one line on a bad input, as the other commands."""
    parser = ArgumentParser(prog="vae-lightning explore", description=__doc__.split("\n\n")[0])
    parser.add_function_arguments(explore, skip={"run"})
    config = parser.parse_args(args)
    try:
        explore(**config.as_dict())
    except Exception as err:
        message = explain(err)
        if message is None or os.environ.get("VAE_LIGHTNING_DEBUG"):
            raise
        print(f"vae-lightning explore: error: {message}", file=sys.stderr)
        raise SystemExit(2) from err
