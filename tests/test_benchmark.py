"""scripts/benchmark.py: its FLOP count, and a short real run end to end (timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import yaml
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
            "--peers",
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
    a, b, b32, p = result["reference"], result["package"], result["package_full_float32"], result["pythae"]
    assert result["train_matmul_precision"] == "medium"  # the vanilla config's, so (b32) ran at "highest"
    assert result["speedup"] == pytest.approx(a["train_s_per_epoch"] / b["train_s_per_epoch"])
    assert result["speedup_over_pythae"] == pytest.approx(p["train_s_per_epoch"] / b["train_s_per_epoch"])
    assert p["train_s_per_epoch_by_round"] == [p["train_s_per_epoch"]]  # one round: its median is the median
    assert result["gemm_peak_bfloat16_gflops"] > 0
    assert f"({torch.backends.cpu.get_cpu_capability()}" in result["machine"]  # the processor's kind is named
    gflop = result["model_gflop_per_epoch"]
    assert result["roofline_fraction"] == pytest.approx(gflop / (b["train_s_per_epoch"] * result["gemm_peak_gflops"]))
    assert result["roofline_fraction_full_float32"] == pytest.approx(
        gflop / (b32["train_s_per_epoch"] * result["gemm_peak_gflops"])
    )
    assert result["roofline_fraction_train_precision"] == pytest.approx(
        gflop / (b["train_s_per_epoch"] * result["gemm_peak_train_precision_gflops"])
    )
    for arm in (a, b, b32, p):
        assert 100 < arm["final_train_loss"][0] < 550  # nats per image
    nll = result["test_nll"]
    assert nll["k"] == 4 and nll["images"] == 8 * 1000 and nll["seconds"] > 0 and nll["peak_memory_mb"] > 0


@pytest.mark.slow
def test_the_gpu_script_runs_every_step_on_the_cpu_with_tiny_sizes(real_mnist, tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_runs.py"), "--dry-run", "--data-dir", str(real_mnist),
         "--out", str(tmp_path / "gpu")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "gpu" / "gpu_runs.json").read_text())
    assert json.loads(done.stdout.strip().splitlines()[-1]) == record
    assert record["device"] == "cpu (dry run)" and record["machine"]
    for step in ("iwae_k50_dreg", "vanilla"):
        assert record[step]["epochs"] == 1 and record[step]["test"]["test/nll"] > 0 and record[step]["fit_seconds"] > 0
    trained = yaml.safe_load(
        (tmp_path / "gpu" / "logs" / "gpu_iwae_k50_dreg" / "version_0" / "config.yaml").read_text()
    )
    assert trained["model"]["gradient_estimator"] == "dreg" and trained["model"]["train_samples"] == 50
    assert trained["init"]["init_args"] == {"weights": "glorot", "output_bias": "data_mean", "clip": 0.001}
    assert trained["model"]["lr_scheduler"]["init_args"]["total_steps"] == 1000  # the default --iwae-epochs
    assert record["benchmark_b128"]["batch_size"] == 128 and record["benchmark_b1024"]["batch_size"] == 1024


@pytest.mark.slow
def test_the_nll_curve_tests_every_saved_checkpoint(run_cli, tiny_config, tmp_path):
    every = (
        '[{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "every", '
        '"every_n_epochs": 1, "save_top_k": -1, "filename": "epoch{epoch:04d}", "auto_insert_metric_name": false}}]'
    )
    started = subprocess.run(["date", "-Iseconds"], capture_output=True, text=True).stdout
    run_cli("fit", "--config", REPO / "configs" / "two_latent.yaml", "--config", tiny_config,
            "--trainer.max_epochs", "2", "--trainer.callbacks", every)  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "nll_curve.py"), "--config", str(REPO / "configs" / "two_latent.yaml"),
         str(tiny_config), "--checkpoints", "every", "--start", started, "--name", "tiny", "--out", "out",
         "--workdir", "work", "--k", "4", "--k-final", "8", "--published", "140.5", "--published-label", "a paper"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "tiny_curve.json").read_text())
    assert [p["epoch"] for p in record["points"]] == [1, 2]
    assert "nll_k8" not in record["points"][0] and record["points"][1]["nll_k8"] > 0  # the last at k-final
    assert all(p["nll_k4"] > 0 and p["wall_seconds"] >= 0 and p["nll_k4_mc_se"] > 0 for p in record["points"])
    assert record["published"] == {"nll": 140.5, "label": "a paper"}
    assert (tmp_path / "out" / "tiny_curve.png").stat().st_size > 10_000


def test_the_paper_nll_timing_counts_the_decoder_flops_and_the_roofline_fraction(real_mnist, tmp_path):
    out = tmp_path / "paper.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--paper-nll", "--data-dir", str(real_mnist),
         "--epochs", "2", "--limit-batches", "2", "--paper-nll-samples", "8", "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    nll = result["paper_test_nll"]
    assert nll["k"] == 8 and nll["images"] == 2000  # two test batches of the config's 1,000 images
    assert nll["decoder_gflop"] == pytest.approx(2 * (50 * 200 + 200 * 200 + 200 * 784) * 8 * 2000 / 1e9)
    assert nll["roofline_fraction"] == pytest.approx(
        nll["decoder_gflop"] / (nll["seconds"] * result["gemm_peak_gflops"])
    )
    assert 100 < nll["test_nll"] < 560 and 0 < nll["test_nll_mc_se"] < 5
    assert "of the float32 GEMM roofline" in done.stdout
    assert all(v > 0 for v in result["softplus"].values())


def test_the_curve_figure_is_drawn_again_with_another_run_beside(tmp_path):
    points = [{"epoch": e, "wall_seconds": 10.0 * e, "nll_k4": 100.0 - e, "nelbo": 105.0 - e} for e in (1, 2, 3)]
    record = {"machine": "here", "k": 4, "k_final": 8, "points": points, "published": {"nll": 96.0, "label": "a"}}
    other = {**record, "points": [{**p, "nll_k4": p["nll_k4"] + 2} for p in points]}
    (tmp_path / "run_curve.json").write_text(json.dumps(record))
    (tmp_path / "other_curve.json").write_text(json.dumps(other))
    script = [sys.executable, str(REPO / "scripts" / "curve_figure.py"), str(tmp_path / "run_curve.json")]
    alone = subprocess.run(script, capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr
    first = (tmp_path / "run_curve.png").read_bytes()
    both = subprocess.run([*script, "--beside", f"earlier={tmp_path / 'other_curve.json'}"], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert (tmp_path / "run_curve.png").read_bytes() != first  # the other run's line is in the figure
    bad = subprocess.run([*script, "--beside", "no-path"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "give LABEL=PATH" in bad.stderr
