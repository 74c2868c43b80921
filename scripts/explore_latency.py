"""The explorer's decode round trip, measured in a real browser: a traversal slider set in the page, the server
decodes and judges the new z, and its decoding arrives back in the page.

    python scripts/explore_latency.py --ckpt_path logs/two_latent/version_0/checkpoints/last.ckpt \\
        --screenshot docs/explore.png

Starts `vae-lightning explore` on a free port, opens the page in headless Chromium (Selenium), and `--rounds`
times sets the most active dimension's slider to a new value from the page's JavaScript, timing with
`performance.now()` until the traversal's data source changes: browser -> websocket -> the Python callback
(decode, classify) -> websocket -> browser, drawing not included. Prints the median, 90th percentile and
maximum in milliseconds, and the JSON last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine, writable

ROUND_TRIPS = """const [name, rounds, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const doc = Bokeh.documents[0], slider = doc.get_model_by_name(name);
const source = doc.get_model_by_name('traversal_decoding');
const times = [];
let pending = null;
source.properties.data.change.connect(() => { if (pending) { const p = pending; pending = null; p(); } });
const one = (value) => new Promise((arrived) => { pending = arrived; slider.value = value; });
(async () => {
  for (let i = 0; i < rounds; i++) {
    const value = slider.start + (slider.end - slider.start) * (0.25 + 0.5 * ((i * 37) % 100) / 100);
    const start = performance.now();
    await one(Math.round(value * 100) / 100 + (i % 2 ? 0.001 : 0));
    times.push(performance.now() - start);
    await new Promise((r) => setTimeout(r, 20));
  }
  done(times);
})();"""


def crop_to_content(path: Path, margin: int = 12) -> None:
    """Cut the white space right of and below the page's panels (the window is wider and taller than them)."""
    from PIL import Image, ImageChops

    with Image.open(path) as shot:
        page = shot.convert("RGB")
    box = ImageChops.invert(page.convert("L")).getbbox()  # the bounding box of everything not white
    if box:
        page = page.crop((0, 0, min(page.width, box[2] + margin), min(page.height, box[3] + margin)))
    page.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--screenshot", type=Path, default=None, help="also save a PNG of the whole page")
    args = parser.parse_args()
    if not Path(args.ckpt_path).is_file():
        parser.error(f"--ckpt_path {args.ckpt_path}: no such file")
    if args.screenshot is not None:
        writable(parser, "--screenshot", file=args.screenshot)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import READY, SLIDERS, browser, free_port, start_explorer, wait_for

    port = free_port()
    extra = ["--data_dir", args.data_dir] if args.data_dir else []
    with tempfile.TemporaryDirectory() as tmp:
        server = start_explorer(Path(args.ckpt_path), port, Path(tmp) / "explore.log", *extra)
        driver = browser()
        try:
            driver.set_script_timeout(600)
            driver.get(f"http://127.0.0.1:{port}/")
            wait_for(lambda: driver.execute_script(READY))
            slider = driver.execute_script(SLIDERS)[0]
            times = driver.execute_async_script(ROUND_TRIPS, slider, args.rounds)
            if args.screenshot:
                height = driver.execute_script("return document.body.scrollHeight")
                driver.set_window_size(1400, max(1200, height + 40))
                time.sleep(1.0)
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.screenshot))
                crop_to_content(args.screenshot)
        finally:
            driver.quit()
            server.terminate()
            server.wait(timeout=30)
    ordered = sorted(times)
    result = {
        "machine": machine(),
        "checkpoint": args.ckpt_path,
        "rounds": len(times),
        "median_ms": statistics.median(times),
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))],
        "max_ms": ordered[-1],
    }
    print(f"decode round trip over {len(times)} slider moves: median {result['median_ms']:.1f} ms, "
          f"90th percentile {result['p90_ms']:.1f} ms, max {result['max_ms']:.1f} ms")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
