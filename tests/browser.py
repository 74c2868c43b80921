"""The explorer in a real browser: headless Chromium (Debian's, with its driver) through Selenium, the page's
Bokeh models read from its JavaScript, and `vae-lightning explore` started as a user starts it. Used by
tests/test_explore.py and scripts/explore_latency.py."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# What the page's JavaScript answers: the Bokeh models by name, and screen points of data coordinates.
READY = """const doc = window.Bokeh && Bokeh.documents[0];
return !!(doc && doc.get_model_by_name('prior_decoding').data.z[0].length);"""
DECODING = "return Bokeh.documents[0].get_model_by_name(arguments[0]).data;"
SPINNER = "return Bokeh.documents[0].get_model_by_name(arguments[0]).value;"
TAP_POINT = """const points = Bokeh.documents[0].get_model_by_name('map_points');
points.selected.indices = [arguments[0]];
return points.data.index[arguments[0]];"""
MAP_POINT = """const fig = Bokeh.documents[0].get_model_by_name('map');
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
