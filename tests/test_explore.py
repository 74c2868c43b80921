"""`vae-lightning explore`: the page in a real browser (Debian's Chromium, driven by Selenium through
chromedriver) on a checkpoint of a short fit, and bad input refused before the server starts."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONFIGS, configs

from vae_lightning.module import VAELitModule

# What the page's JavaScript answers: the Bokeh models by name, and screen points of data coordinates.
READY = """const doc = window.Bokeh && Bokeh.documents[0];
return !!(doc && doc.get_model_by_name('prior_decoding').data.z[0].length);"""
DECODING = "return Bokeh.documents[0].get_model_by_name(arguments[0]).data;"
MAP_POINT = """const fig = Bokeh.documents[0].get_model_by_name('latent_map');
const view = Bokeh.index.find_one(fig), box = view.el.getBoundingClientRect();
return [box.left + view.frame.x_scale.compute(arguments[0]), box.top + view.frame.y_scale.compute(arguments[1])];"""
SLIDERS = (
    """return [...Bokeh.documents[0].all_models].map(m => m.name).filter(n => n && n.startsWith('traversal_z'));"""
)
SLIDER_HANDLE = """const view = Bokeh.index.find_one(Bokeh.documents[0].get_model_by_name(arguments[0]));
const box = view.shadow_el.querySelector('.noUi-handle').getBoundingClientRect();
return [box.left + box.width / 2, box.top + box.height / 2];"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def browser():
    """Headless Chromium (the system's, as Debian packages it with its driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, (
        "the browser tests need Chromium and its driver: apt-get install chromium chromium-driver"
    )
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,2000"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def wait_for(condition, timeout: float = 120.0, what: str = "the page"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def start_explorer(checkpoint: Path, port: int, log: Path, *extra: str) -> subprocess.Popen:
    """`vae-lightning explore` as a user starts it, its output to a file; returns once it serves."""
    command = [str(Path(sys.executable).parent / "vae-lightning"), "explore", "--ckpt_path", str(checkpoint),
               "--port", str(port), "--download", "false", *extra]  # fmt: skip
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    wait_for(lambda: "serving" in log.read_text() or server.poll() is not None, what="the explorer's start")
    assert server.poll() is None, log.read_text()
    return server


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
def test_the_page_decodes_what_the_map_and_a_slider_point_at(run_cli, tiny_config, tmp_path):
    from selenium.webdriver.common.action_chains import ActionBuilder

    run_cli("fit", *configs(CONFIGS / "vanilla.yaml", tiny_config), "--trainer.max_epochs", "2",
            "--model.latent_dim", "4", "--experiments.names", "[]")  # fmt: skip
    checkpoint = next(tmp_path.glob("logs/**/last.ckpt"))
    model = VAELitModule.load_from_checkpoint(checkpoint, weights_only=True).eval()
    server = start_explorer(checkpoint, free_port(), tmp_path / "explore.log")
    driver = browser()
    try:
        driver.get(f"http://127.0.0.1:{server.args[server.args.index('--port') + 1]}/")
        wait_for(lambda: driver.execute_script(READY))
        title = driver.execute_script("return Bokeh.documents[0].get_model_by_name('title').text")
        assert "100 test images, 4 latents" in title and "PCA of 4 latents" in title and "data mean" in title

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
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


def explore_error(capsys, *args) -> str:
    """`vae-lightning explore ARGS` in this process, expected to refuse (exit 2); its stderr."""
    from vae_lightning.cli import main

    with pytest.raises(SystemExit) as done:
        main(["explore", *map(os.fspath, map(str, args))])
    assert done.value.code == 2
    return capsys.readouterr().err


def test_bad_input_is_refused_before_the_server_starts(run_cli, capsys, tiny_config, tmp_path):
    run_cli("fit", *configs(CONFIGS / "two_latent.yaml", tiny_config), "--trainer.max_epochs", "1")
    checkpoint = next(tmp_path.glob("logs/**/last.ckpt"))
    err = explore_error(capsys, "--ckpt_path", tmp_path / "missing.ckpt")
    assert "--ckpt_path" in err and "missing.ckpt" in err and "Traceback" not in err
    torch.save({"weight": torch.zeros(2)}, tmp_path / "weights.pt")
    assert "holds a bare state_dict" in explore_error(capsys, "--ckpt_path", tmp_path / "weights.pt")
    (tmp_path / "cut.ckpt").write_bytes(checkpoint.read_bytes()[:1000])
    assert "cut.ckpt" in explore_error(capsys, "--ckpt_path", tmp_path / "cut.ckpt")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = explore_error(capsys, "--ckpt_path", checkpoint, "--port", port)
    assert f"--port {port}: already in use on 127.0.0.1" in err and f"--port {port + 1}" in err
    assert "--port 70000: ports go up to 65535" in explore_error(capsys, "--ckpt_path", checkpoint, "--port", 70000)
    assert "--max_sliders must be a positive integer" in explore_error(
        capsys, "--ckpt_path", checkpoint, "--max_sliders", 0
    )


def test_without_the_extra_the_command_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['bokeh'] = None\n"  # as if bokeh were not installed: its import fails
            "from vae_lightning.cli import main\nmain(['explore', '--ckpt_path', 'x.ckpt'])")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "VAE_LIGHTNING_DATA_DIR": str(tmp_path)}, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert 'pip install -e ".[explore]"' in done.stderr and "Traceback" not in done.stderr
