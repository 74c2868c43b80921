"""`vae-lightning explore --ckpt_path CKPT`: a local latent-space explorer in the browser.

The checkpoint's model (weights only) over a split of MNIST as it saw it (its data settings), served as a Bokeh page
(`app.py`, the `explore` extra): the latent map, a traversal, an interpolation, prior samples, each decoding judged
by the package's digit classifier.
"""

from __future__ import annotations

import os
from typing import Literal

from jsonargparse import ArgumentParser
from jsonargparse.typing import PositiveInt, restricted_number_type

from vae_lightning.errors import ConfigError, attributed, run_command

Port = restricted_number_type("Port", int, [(">=", 1), ("<=", 65535)])


def load_explorer(ckpt_path: str, split: str, data_dir: str | None, max_sliders: int, device: str, download: bool):
    """The checkpoint's model over one split of its data, with the digit classifier: an `Explorer`."""
    from vae_lightning.data import MNISTDataModule
    from vae_lightning.experiments import digit_classifier, load_model, resolve_device
    from vae_lightning.explore.state import Explorer

    model, checkpoint = load_model(ckpt_path, resolve_device(device))  # refused by name if missing, foreign, ...
    data_hparams = {k: v for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    data_hparams.update(download=download, predict_split=split, **({"data_dir": data_dir} if data_dir else {}))
    datamodule = MNISTDataModule(**data_hparams)  # a split it cannot serve (val of val_size 0) refused here
    datamodule.prepare_data()
    datamodule.setup("predict")
    images, labels = datamodule.splits[split]
    classifier, _ = digit_classifier(os.fspath(datamodule.data_dir))
    return Explorer(model, images.float().div(255).unsqueeze(1).cpu(), labels.cpu(), classifier, max_sliders)


def explore(
    ckpt_path: str,
    split: Literal["train", "val", "test"] = "test",
    data_dir: str | None = None,
    host: str = "127.0.0.1",
    port: Port = 5006,
    max_sliders: PositiveInt = 10,
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
        port: the port to listen on (1-65535).
        max_sliders: traversal sliders, the most active latent dimensions first.
        device: `auto`, `cpu` or `cuda` for the model.
        download: fetch MNIST if missing.
        run: serve until interrupted (false: start the server and return it, for tests).
    """
    try:  # the extra, checked first: a missing install is said before any work
        from bokeh.server.util import bind_sockets
    except ImportError as err:
        raise ConfigError('vae-lightning explore needs the explore extra (Bokeh): pip install -e ".[explore]"') from err
    import torch

    from vae_lightning.explore.app import serve

    # the port is taken first, so one in use is refused before the model loads
    with attributed(f"--host {host} --port {port}", f"another --port (e.g. --port {port + 1}) or a local --host"):
        sockets, _ = bind_sockets(host, int(port))  # a plain int: getaddrinfo refuses subclasses
    try:
        explorer = load_explorer(ckpt_path, split, data_dir, max_sliders, device, download)
        origins = ["*"] if host in ("0.0.0.0", "::") else [f"{h}:{port}" for h in (host, "localhost", "127.0.0.1")]
        server = serve(explorer, split, sockets, origins)
    except BaseException:
        for listening in sockets:
            listening.close()
        raise
    shown = f"[{host}]" if ":" in host else host
    print(f"vae-lightning explore: serving {ckpt_path} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if not run:
        return server
    # Each request decodes and judges a few images: one thread answers at once, where a team of intra-op threads
    # would wait for cores another program (a training run, say) holds.
    torch.set_num_threads(1)
    try:
        server.io_loop.start()
    finally:
        server.stop()
    return None


def main(args: list[str] | None = None) -> None:
    """`vae-lightning explore ...`: bad flags refused as they are parsed, the rest under `errors.run_command`."""
    parser = ArgumentParser(prog="vae-lightning explore", description=__doc__.split("\n\n")[0])
    parser.add_function_arguments(explore, skip={"run"})
    config = parser.parse_args(args)
    run_command("vae-lightning explore", lambda: explore(**config.as_dict()))
