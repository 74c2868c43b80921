"""`vae-lightning explore --ckpt_path CKPT`: a checkpoint's latent space over a split of MNIST as it saw it, in a
Bokeh page (the `explore` extra): latent map, traversal, interpolation, prior samples, each judged by a classifier."""

import ipaddress
import socket
from typing import Literal

import torch
from jsonargparse import ArgumentParser
from jsonargparse.typing import PositiveInt, restricted_number_type

from vae_lightning.errors import ConfigError, attributed, run_command
from vae_lightning.experiments.base import ExperimentData
from vae_lightning.experiments.command import load_checkpoint

Port = restricted_number_type("Port", int, [(">=", 1), ("<=", 65535)])


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
    """
    try:  # the extra, checked first: a missing install is said before any work
        from bokeh.server.util import bind_sockets
    except ImportError as err:
        raise ConfigError('vae-lightning explore needs the explore extra (Bokeh): pip install -e ".[explore]"') from err
    from vae_lightning.explore.app import serve

    # the port is taken first, so one in use is refused before the model loads
    with attributed(f"--host {host} --port {port}", f"another --port (e.g. --port {port + 1}) or a local --host"):
        sockets, _ = bind_sockets(host, int(port))  # a plain int: getaddrinfo refuses subclasses
    try:
        model, _, datamodule = load_checkpoint(ckpt_path, device, data_dir, download=download, predict_split=split)
        data = ExperimentData.from_datamodule(datamodule, split)
        names = own_names() if host in ("0.0.0.0", "::") else [host]  # the addresses a page of ours comes from
        origins = [f"{h}:{port}" for h in (*names, "localhost", "127.0.0.1")]
        server = serve(sockets, origins, model=model, data=data, split=split, max_sliders=max_sliders)
    except BaseException:
        for listening in sockets:
            listening.close()
        raise
    shown = f"[{names[0]}]" if ":" in names[0] else names[0]
    print(f"vae-lightning explore: serving {ckpt_path} at http://{shown}:{port}/ (Ctrl-C stops)", flush=True)
    if not loopback(host):
        print(
            f"vae-lightning explore: note: reachable from the network (--host {host}): whoever reaches this address "
            "can open the page and see the images; pages of other origins are refused. --host 127.0.0.1 keeps it "
            "on this machine.",
            flush=True,
        )
    if not run:
        return server
    # one thread answers a request at once, where a team would wait for cores another program (a training run) holds
    torch.set_num_threads(1)
    try:
        server.io_loop.start()
    finally:
        server.stop()


def loopback(host: str) -> bool:
    """Whether `host` (an address or a name) is this machine's loopback: a page there is not reachable from others."""
    try:
        return ipaddress.ip_address(host if ":" in host else socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def own_names() -> list[str]:
    """Where a page of this machine opened from the network comes from: its addresses but loopback, then its names."""
    name = socket.gethostname()
    try:
        addresses = [a for a in socket.gethostbyname_ex(name)[2] if not loopback(a)]
    except OSError:  # a name the resolver does not know: the page can still come by the name itself
        addresses = []
    return list(dict.fromkeys([*addresses, name, socket.getfqdn()]))


def main(args: list[str] | None = None) -> None:
    """`vae-lightning explore ...` under `errors.run_command`; a bad flag exits as jsonargparse parses it (exit 2)."""
    parser = ArgumentParser(prog="vae-lightning explore", description=__doc__)
    parser.add_function_arguments(explore, skip={"run"})
    run_command("vae-lightning explore", lambda: explore(**parser.parse_args(args).as_dict()))
