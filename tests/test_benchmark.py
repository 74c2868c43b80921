"""scripts/benchmark.py: its FLOP count, and a short real run end to end (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from benchmark import VANILLA_LAYERS, train_flops_per_image


def test_the_vanilla_mlp_costs_197_gflop_of_matrix_multiplies_per_epoch():
    # forward 2*in*out per layer; backward twice that, but the first layer needs no gradient of its input
    forward = 2 * (784 * 400 + 400 * 40 + 20 * 400 + 400 * 784)
    assert train_flops_per_image(VANILLA_LAYERS) == 3 * forward - 2 * 784 * 400
    assert train_flops_per_image(VANILLA_LAYERS) * 60_000 / 1e9 == pytest.approx(196.8, abs=0.05)


@pytest.mark.slow
def test_a_short_benchmark_runs_every_loop_and_reports_consistent_numbers(real_mnist, tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "benchmark.py"),
            "--data-dir",
            str(real_mnist),
            "--epochs",
            "2",
            "--repeats",
            "1",
            "--limit-batches",
            "8",
            "--nll-samples",
            "4",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == result  # the last line printed is the JSON
    a, b, b32 = result["reference"], result["package"], result["package_full_float32"]
    assert result["train_matmul_precision"] == "medium"  # the vanilla config's, so (b32) ran at "highest"
    assert result["speedup"] == pytest.approx(a["train_s_per_epoch"] / b["train_s_per_epoch"])
    gflop = result["model_gflop_per_epoch"]
    assert result["roofline_fraction"] == pytest.approx(gflop / (b["train_s_per_epoch"] * result["gemm_peak_gflops"]))
    assert result["roofline_fraction_full_float32"] == pytest.approx(
        gflop / (b32["train_s_per_epoch"] * result["gemm_peak_gflops"])
    )
    assert result["roofline_fraction_train_precision"] == pytest.approx(
        gflop / (b["train_s_per_epoch"] * result["gemm_peak_train_precision_gflops"])
    )
    for arm in (a, b, b32):
        assert 100 < arm["final_train_loss"][0] < 550  # nats per image
    nll = result["test_nll"]
    assert nll["k"] == 4 and nll["images"] == 8 * 1000 and nll["seconds"] > 0 and nll["peak_memory_mb"] > 0
