"""scripts/rate_distortion.py end to end on the tiny set: the sweep's grid (two betas, one latent size) fitted,
tested and measured through the CLI, the record and the figure written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, subprocess_env


def sweep(tiny_config, tmp_path, *grid: str) -> subprocess.CompletedProcess:
    """scripts/rate_distortion.py on the tiny set, one epoch a point, its record under tmp_path/out."""
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "rate_distortion.py"), "--config", str(tiny_config), *grid,
         "--epochs", "1", "--nll-samples", "4", "--output", str(tmp_path / "out"), "--workdir", str(tmp_path / "work")],
        env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip


@pytest.mark.slow
def test_the_script_fits_tests_and_measures_each_point_and_draws_the_plane(tiny_config, tmp_path):
    out = tmp_path / "out"
    done = sweep(tiny_config, tmp_path, "--betas", "0.5", "2", "--latents", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((out / "rate_distortion.json").read_text())
    assert record["sweep"] == os.path.join("configs", "sweeps", "beta.yaml") and record["wall_seconds"] > 0
    points = record["points"]
    assert [(p["beta"], p["latent_dim"], p["epochs"]) for p in points] == [(0.5, 2, 1), (2.0, 2, 1)]
    for p in points:
        assert p["nelbo"] == pytest.approx(p["rate"] + p["distortion"], rel=1e-5)  # test nelbo = kl + recon
        assert p["nll"] < p["nelbo"] and p["active_units"] <= 2 and 0 <= p["knn_accuracy"] <= 1
        assert os.path.isfile(p["checkpoint"])
    assert (out / "rate_distortion.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_failed_point_is_named_at_the_end_and_the_others_are_written(tiny_config, tmp_path):
    out = tmp_path / "out"  # 10^11 latents cannot be built: that point fails at once, the other completes
    done = sweep(tiny_config, tmp_path, "--betas", "1", "--latents", "2", "100000000000")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "1 of 2 points failed (named above and in the JSON's 'failed')" in done.stderr
    record = json.loads((out / "rate_distortion.json").read_text())
    assert [p["latent_dim"] for p in record["points"]] == [2]
    assert [p["latent_dim"] for p in record["failed"]] == [100000000000]
    assert "latent100000000000_beta1" in record["failed"][0]["failed"] or "fit.log" in record["failed"][0]["failed"]
