"""`vae-lightning explore`: the page in a real browser (Debian's Chromium, driven by Selenium through
chromedriver) on a checkpoint of a short fit, and bad input refused before the server starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from browser import (
    DECODING,
    MAP_POINT,
    READY,
    SLIDER_HANDLE,
    SLIDERS,
    SPINNER,
    TAP_POINT,
    browser,
    free_port,
    start_explorer,
    wait_for,
)
from conftest import CONFIGS, configs

from vae_lightning.module import VAELitModule


def posterior_means(checkpoint: Path, model: VAELitModule) -> list[list[float]]:
    """Posterior means of the test images as the checkpoint's data settings serve them."""
    from vae_lightning.data import MNISTDataModule

    settings = torch.load(checkpoint, weights_only=True)["datamodule_hyper_parameters"]
    datamodule = MNISTDataModule(**{k: v for k, v in settings.items() if not k.startswith("_")})
    datamodule.setup("predict")
    with torch.no_grad():
        return model.encode(datamodule.splits["test"][0].float().div(255).unsqueeze(1))[0].tolist()


def decoded(model: VAELitModule, z: list[float]) -> np.ndarray:
    """What the page must show for z: model.decode, flipped as the page draws it (Bokeh's y points up)."""
    with torch.no_grad():
        pixels = model.decode(torch.tensor([z], dtype=torch.float32))[0, 0].numpy()
    return np.flipud(pixels)


def page_image(data: dict) -> np.ndarray:
    """A Bokeh image column as the browser holds it: a typed array with its shape."""
    image = data["image"][0]
    return np.asarray(image["array"] if isinstance(image, dict) else image, dtype=np.float32).reshape(28, 28)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "latents", "binarize", "plane"),
    [("vanilla", 4, "none", "PCA of 4 latents"), ("cnn", 2, "dynamic", "latent dimensions 0 and 1")],
)
def test_the_page_decodes_what_the_map_and_a_slider_point_at(
    run_cli, tiny_config, tmp_path, variant, latents, binarize, plane
):
    from selenium.webdriver.common.action_chains import ActionBuilder

    run_cli("fit", *configs(CONFIGS / f"{variant}.yaml", tiny_config), "--trainer.max_epochs", "2",
            "--model.latent_dim", str(latents), "--data.binarize", binarize, "--experiments.names", "[]")  # fmt: skip
    checkpoint = next(tmp_path.glob("logs/**/last.ckpt"))
    model = VAELitModule.load_from_checkpoint(checkpoint, weights_only=True).eval()
    server = start_explorer(checkpoint, free_port(), tmp_path / "explore.log")
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{server.args[server.args.index('--port') + 1]}/")
        wait_for(lambda: driver.execute_script(READY))
        title = driver.execute_script("return Bokeh.documents[0].get_model_by_name('title').text")
        assert f"100 test images, {latents} latents" in title and plane in title
        assert ("data mean" in title) == (latents > 2)  # what a map point decodes to, said where it applies

        # a click on the map: the decoding follows, and it is model.decode of the z the page says
        before = driver.execute_script(DECODING, "map_decoding")
        points = driver.execute_script("return Bokeh.documents[0].get_model_by_name('map_points').data")
        x, y = (points["x"][3] + points["x"][7]) / 2, (points["y"][3] + points["y"][7]) / 2  # inside the map
        actions = ActionBuilder(driver)
        actions.pointer_action.move_to_location(*map(round, driver.execute_script(MAP_POINT, x, y))).click()
        actions.perform()
        after = wait_for(lambda: (d := driver.execute_script(DECODING, "map_decoding"))["z"][0] != before["z"][0]
                         and d, what="the map's decoding")  # fmt: skip
        np.testing.assert_allclose(page_image(after), decoded(model, after["z"][0]), atol=1e-5)

        # a slider dragged by the pointer: its dimension of z moves, the rest stays at the image's mu
        slider = driver.execute_script(SLIDERS)[0]  # the most active dimension's
        before = driver.execute_script(DECODING, "traversal_decoding")
        handle = driver.execute_script(SLIDER_HANDLE, slider)
        actions = ActionBuilder(driver)
        actions.pointer_action.move_to_location(*map(round, handle)).pointer_down()
        actions.pointer_action.move_to_location(round(handle[0]) + 60, round(handle[1])).pointer_up()
        actions.perform()
        after = wait_for(lambda: (d := driver.execute_script(DECODING, "traversal_decoding"))["z"][0] != before["z"][0]
                         and d, what="the traversal's decoding")  # fmt: skip
        changed = [i for i, (a, b) in enumerate(zip(before["z"][0], after["z"][0])) if a != b]
        assert changed == [int(slider[11:])]
        value = driver.execute_script(f"return Bokeh.documents[0].get_model_by_name('{slider}').value")
        assert after["z"][0][changed[0]] == pytest.approx(value)
        np.testing.assert_allclose(page_image(after), decoded(model, after["z"][0]), atol=1e-5)
        verdict = driver.execute_script("return Bokeh.documents[0].get_model_by_name('traversal_verdict').text")
        assert verdict.startswith(("judged", "no digit"))

        # the legend lists the digits 0-9 (rows by digit), and tapping a point picks that point's image
        assert points["digit"] == sorted(points["digit"]) and points["index"] != sorted(points["index"])
        tapped = driver.execute_script(TAP_POINT, 37)  # the image of row 37, selected as a tap selects it
        wait_for(lambda: driver.execute_script(SPINNER, "traversal_index") == tapped, what="the tapped image")
        shown = wait_for(lambda: (d := driver.execute_script(DECODING, "traversal_original"))["z"][0] and d)
        np.testing.assert_allclose(shown["z"][0], posterior_means(checkpoint, model)[tapped], atol=1e-5)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


def explore_error(capsys, *args) -> str:
    """`vae-lightning explore ARGS` in this process, expected to refuse (exit 2); its stderr."""
    from vae_lightning.cli import main

    with pytest.raises(SystemExit) as done:
        main(["explore", *map(str, args)])
    assert done.value.code == 2
    return capsys.readouterr().err


def test_bad_input_is_refused_before_the_server_starts(run_cli, capsys, tiny_config, tmp_path):
    run_cli("fit", *configs(CONFIGS / "two_latent.yaml", tiny_config), "--trainer.max_epochs", "1")
    checkpoint, port = next(tmp_path.glob("logs/**/last.ckpt")), free_port()
    err = explore_error(capsys, "--ckpt_path", tmp_path / "missing.ckpt", "--port", port)
    assert "--ckpt_path" in err and "missing.ckpt" in err and "Traceback" not in err
    with socket.socket() as again:  # the refused command let go of its port
        again.bind(("127.0.0.1", port))
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    assert "holds a bare state_dict" in explore_error(capsys, "--ckpt_path", tmp_path / "weights.pt", "--port", port)
    (tmp_path / "cut.ckpt").write_bytes(checkpoint.read_bytes()[:1000])
    assert "cut.ckpt" in explore_error(capsys, "--ckpt_path", tmp_path / "cut.ckpt", "--port", port)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = explore_error(capsys, "--ckpt_path", tmp_path / "missing.ckpt", "--port", port)  # the port comes first
    assert err.startswith(f"vae-lightning explore: error: --host 127.0.0.1 --port {port}: ")
    assert f"--port {port + 1}" in err and "missing.ckpt" not in err
    for flag, value in (("--port", 0), ("--port", 70000), ("--max_sliders", 0)):  # refused as they are parsed
        err = explore_error(capsys, "--ckpt_path", checkpoint, flag, value)
        assert f'"{flag[2:]}"' in err and str(value) in err and "Traceback" not in err


def test_without_the_extra_the_command_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['bokeh'] = None\n"  # as if bokeh were not installed: its import fails
            "from vae_lightning.cli import main\nmain(['explore', '--ckpt_path', 'x.ckpt'])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "VAE_LIGHTNING_DATA_DIR": str(tmp_path)}, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert 'pip install -e ".[explore]"' in done.stderr and "Traceback" not in done.stderr


def accepted_connections(port: int) -> list[socket.socket]:
    """The TCP connections this process accepted on `port`: copies of their descriptors, found in /proc."""
    connections = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            duplicate = os.dup(int(fd))
        except OSError:  # the listing's own descriptor, closed since
            continue
        try:
            copy = socket.socket(fileno=duplicate)
        except OSError:  # not a socket (and the descriptor stays ours to close)
            os.close(duplicate)
            continue
        try:
            internet = copy.family in (socket.AF_INET, socket.AF_INET6) and copy.type == socket.SOCK_STREAM
            accepted = internet and copy.getsockname()[1] == port and copy.getpeername()
        except OSError:  # not connected: the listening socket
            accepted = False
        if accepted:
            connections.append(copy)
        else:
            copy.close()
    return connections


def websocket_handshake(port: int, origin: str) -> int:
    """The HTTP status the explorer answers a websocket handshake on its /ws from a page of `origin` with."""
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Origin: {origin}",
        "",
        "",
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall("\r\n".join(lines).encode())
        return int(connection.recv(1024).split()[1])


def test_the_page_s_websocket_sends_each_frame_at_once_and_only_to_its_own_origin(run_cli, tiny_config, tmp_path):
    """Nagle's algorithm is off on the server's end of the page's connections once the page is ready (else each
    decoding waits ~40 ms for the browser's delayed acknowledgement; the round trip itself is measured by
    scripts/explore_latency.py). Tornado turns it off after every HTTP request, so without the explorer's
    doing no connection has it. A page of another origin may not open the websocket."""
    import asyncio
    import threading

    from vae_lightning.explore import explore

    run_cli("fit", *configs(CONFIGS / "two_latent.yaml", tiny_config), "--trainer.max_epochs", "1")
    checkpoint, port, started = next(tmp_path.glob("logs/**/last.ckpt")), free_port(), {}

    def serve() -> None:  # the explorer in this process, on a thread with its own event loop
        asyncio.set_event_loop(asyncio.new_event_loop())
        started["server"] = explore(str(checkpoint), port=port, download=False, run=False)
        started["server"].io_loop.start()

    def nodelay() -> list[int]:
        connections = accepted_connections(port)
        options = [c.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in connections]
        for connection in connections:
            connection.close()
        return options

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    wait_for(lambda: "server" in started or not thread.is_alive(), what="the explorer's start")
    server, driver = started["server"], browser()
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(lambda: driver.execute_script(READY))
        wait_for(lambda: (options := nodelay()) and all(options), timeout=10, what="TCP_NODELAY on every connection")
        assert websocket_handshake(port, f"http://localhost:{port}") == 101  # then closed: no session token
        assert websocket_handshake(port, "http://elsewhere.example") == 403
    finally:
        driver.quit()
        server.io_loop.add_callback(lambda: (server.stop(), server.io_loop.stop()))
        thread.join(timeout=30)


def test_bound_beyond_localhost_it_accepts_only_its_own_page_s_origin_and_says_it_is_reachable(
    run_cli, capsys, tiny_config, tmp_path
):
    import asyncio
    import threading

    from vae_lightning.explore import explore, own_names

    run_cli("fit", *configs(CONFIGS / "two_latent.yaml", tiny_config), "--trainer.max_epochs", "1")
    checkpoint, port, started = next(tmp_path.glob("logs/**/last.ckpt")), free_port(), {}
    capsys.readouterr()

    def serve() -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        started["server"] = explore(str(checkpoint), host="0.0.0.0", port=port, download=False, run=False)
        started["server"].io_loop.start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    wait_for(lambda: "server" in started or not thread.is_alive(), what="the explorer's start")
    try:
        out = capsys.readouterr().out
        assert f"at http://{own_names()[0]}:{port}/" in out and "reachable from the network (--host 0.0.0.0)" in out
        assert websocket_handshake(port, f"http://{own_names()[0]}:{port}") == 101
        assert websocket_handshake(port, "http://elsewhere.example") == 403  # any other page: refused
        assert websocket_handshake(port, f"http://elsewhere.example:{port}") == 403
    finally:
        server = started["server"]
        server.io_loop.add_callback(lambda: (server.stop(), server.io_loop.stop()))
        thread.join(timeout=30)
