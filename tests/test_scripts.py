"""Every script under scripts/ refuses bad arguments, inputs and outputs before its first long step: one line
naming the flag (argparse's usage error, exit 2), no traceback, nothing run."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import REPO, subprocess_env

UNWRITABLE = "/sys/vae-lightning-test"  # sysfs: no new files, even for root

# (script, its arguments, what the refusal names)
BAD_ARGUMENTS = [
    ("rate_distortion.py", ["--output", UNWRITABLE], f"--output: '{UNWRITABLE}' cannot be written"),
    ("rate_distortion.py", ["--workdir", UNWRITABLE], f"--workdir: '{UNWRITABLE}' cannot be written"),
    ("rate_distortion.py", ["--betas", "-1", "1"], "the grid holds beta -1: betas must be >= 0"),
    ("rate_distortion.py", ["--latents", "0"], "the grid holds 0 latents"),
    ("seed_results.py", ["--runs", "vanilla", "--output", f"{UNWRITABLE}/x.json"], "--output: "),
    ("reproduce_seed.py", ["--output", UNWRITABLE], f"--output: '{UNWRITABLE}' cannot be written"),
    ("paper_seeds.py", ["--runs", "a", "--config", "configs/vanilla.yaml", "--out", f"{UNWRITABLE}/x"], "--out: "),
    ("benchmark.py", ["--json", f"{UNWRITABLE}/b.json"], "--json: "),
    ("benchmark.py", ["--paper-nll", "--nll-checkpoint", "missing.ckpt"], "--nll-checkpoint missing.ckpt: no such"),
    ("gpu_runs.py", ["--dry-run", "--out", UNWRITABLE], f"--out: '{UNWRITABLE}' cannot be written"),
    ("nll_curve.py", ["--checkpoints", ".", "--start", "yesterday", "--name", "x", "--config", "configs/vanilla.yaml"],
     "--start 'yesterday': not an ISO date"),
    ("explore_latency.py", ["--ckpt_path", "missing.ckpt"], "--ckpt_path missing.ckpt: no such file"),
    ("curve_figure.py", ["missing_curve.json"], "missing_curve.json: no such file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("script", "args", "expected"), BAD_ARGUMENTS, ids=[f"{c[0]} {c[1][0]}" for c in BAD_ARGUMENTS]
)
def test_a_script_refuses_bad_arguments_before_any_work(tmp_path, script, args, expected):
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), *args],
        env=subprocess_env(tmp_path), capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - started < 60  # refused before the first fit, benchmark or test
