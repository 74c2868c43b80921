"""Shared fixtures: tiny IDX files written here (independently of the package), the real MNIST set,
and an in-process CLI runner."""

from __future__ import annotations

import csv
import gzip
import hashlib
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_RAW = REPO.parent / "shared" / "data" / "MNIST" / "raw"
CONFIGS = REPO / "configs"
VARIANTS = ("vanilla", "two_latent", "cnn", "no_kld", "no_recon")
SECRET = "0123456789abcdef0123456789abcdef01234567"  # looks like an API key; must never be written anywhere


def write_idx(path: Path, array: torch.Tensor) -> None:
    """IDX as LeCun describes it: 0x00 0x00, type 0x08 (ubyte), ndim, big-endian int32 dims, bytes."""
    array = array.to(torch.uint8).contiguous()
    header = bytes([0, 0, 0x08, array.dim()]) + struct.pack(f">{array.dim()}i", *array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digit_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Images a VAE can learn: a bright 8x8 square whose place depends on the label, plus noise,
    and a unique code in the first row (so every image is distinct and traceable)."""
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(len(labels), 28, 28, generator=generator) * 40).to(torch.uint8)
    for i, label in enumerate(labels.tolist()):
        row, col = 2 + 6 * (label // 4), 2 + 6 * (label % 4)
        images[i, row : row + 8, col : col + 8] = 230
        images[i, 0, :16] = torch.tensor([(i >> bit) & 1 for bit in range(16)], dtype=torch.uint8) * 255
    return images


def make_tiny_mnist(root: Path, n_train: int = 300, n_test: int = 100) -> dict[str, str]:
    """Write four tiny IDX files under root/MNIST/raw; return their checksums by name."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train_labels = torch.arange(n_train) % 10
    test_labels = torch.arange(n_test) % 10
    write_idx(raw / "train-images-idx3-ubyte", digit_images(train_labels, seed=1))
    write_idx(raw / "train-labels-idx1-ubyte", train_labels)
    write_idx(raw / "t10k-images-idx3-ubyte", digit_images(test_labels, seed=2))
    write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)
    return {p.name: sha256(p) for p in raw.iterdir()}


@pytest.fixture
def tiny_mnist(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(data_dir, checksums) of a fresh tiny MNIST-format set: 300 train, 100 test images."""
    data_dir = tmp_path / "data"
    return data_dir, make_tiny_mnist(data_dir)


@pytest.fixture
def tiny_config(tiny_mnist, tmp_path: Path) -> Path:
    """A config piece pointing the CLI at the tiny set, composed after a variant config."""
    data_dir, checksums = tiny_mnist
    piece = {
        "trainer": {
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": str(tmp_path / "logs")},
            },
            "enable_progress_bar": False,
            "enable_model_summary": False,
        },
        "test_likelihood": {"samples": 8},
        "data": {
            "data_dir": str(data_dir),
            "checksums": checksums,
            "val_size": 50,
            "batch_size": 50,
            "eval_batch_size": 40,
            "download": False,
        },
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(piece))
    return path


@pytest.fixture(scope="session")
def real_mnist(tmp_path_factory) -> Path:
    """A data_dir with the real MNIST files (from ../shared), decompressed and verified once."""
    from vae_lightning.data.files import ensure_mnist

    if not SHARED_RAW.is_dir():
        pytest.fail(f"the real MNIST files are expected in {SHARED_RAW} (CI provides ../shared)")
    data_dir = tmp_path_factory.mktemp("real_mnist")
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in SHARED_RAW.glob("*.gz"):
        shutil.copy(gz, raw / gz.name)
    ensure_mnist(data_dir, download=False)
    return data_dir


def gzip_file(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, gzip.open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


@pytest.fixture
def run_cli(tmp_path: Path, monkeypatch):
    """Run the real CLI in-process in a scratch working directory; return the LightningCLI."""
    from vae_lightning.cli import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["vae-lightning"])  # pytest's own arguments are not ours
    monkeypatch.setenv("VAE_LIGHTNING_DATA_DIR", str(tmp_path / "default-data-dir"))
    return lambda *args, run=True: cli(list(map(os.fspath, args)), run=run)


def cli_error(run_cli, capsys, *args, code: int = 2) -> str:
    """Run the CLI expecting it to exit with `code` (2: refused input, 1: a run that stopped); its stderr."""
    with pytest.raises(SystemExit) as done:
        run_cli(*args)
    assert done.value.code == code
    return capsys.readouterr().err


def subprocess_env(cwd: Path) -> dict[str, str]:
    """The environment of a CLI subprocess: tests/ importable (probes.py), no default data dir reachable."""
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "VAE_LIGHTNING_DATA_DIR": str(cwd / "unused"),
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]),
    }


def default_sigint() -> None:
    """In the child: SIGINT back to its default, as in a terminal. A shell starts background jobs with SIGINT
    ignored, which the child inherits, and Python then installs no KeyboardInterrupt handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_subprocess(args: list, cwd: Path, timeout: float = 240, returncode: int = 0) -> str:
    """Run `python -m vae_lightning ...` in its own process group; kill the whole group if it hangs."""
    env = subprocess_env(cwd)
    command = [sys.executable, "-m", "vae_lightning", *map(os.fspath, args)]
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        preexec_fn=default_sigint,
    )  # fmt: skip
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # Lightning traps SIGTERM; the DDP ranks share the group
        out, _ = process.communicate()
        pytest.fail(f"timed out after {timeout} s: {' '.join(command)}\n{out[-3000:]}")
    assert process.returncode == returncode, f"exit {process.returncode}:\n{out[:1500]}\n[...]\n{out[-6000:]}"
    return out


def read_metrics(log_root: Path, prefix: str) -> dict[str, float]:
    (version,) = [p for p in log_root.iterdir() if (p / "metrics.csv").exists()]
    rows = list(csv.DictReader((version / "metrics.csv").read_text().splitlines()))
    return {k: float(v) for row in rows for k, v in row.items() if k.startswith(prefix) and v}


def configs(*paths) -> list:
    """`--config PATH` for each path, in order (the later wins), as the CLI takes them."""
    return [arg for path in paths for arg in ("--config", path)]


@pytest.fixture
def read_only():
    """`with read_only(folder):` makes an existing folder truly read-only for this process: a read-only bind
    mount over itself when the tests run as root (root writes through permission bits), else chmod."""
    import contextlib
    import stat
    import subprocess

    @contextlib.contextmanager
    def make(folder: Path):
        folder = Path(folder)
        if os.geteuid() != 0:
            mode = folder.stat().st_mode
            folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
            try:
                yield folder
            finally:
                folder.chmod(mode)
            return
        for command in (["mount", "--bind", folder, folder], ["mount", "-o", "remount,bind,ro", folder]):
            done = subprocess.run(list(map(str, command)), capture_output=True, text=True)
            if done.returncode != 0:
                pytest.fail(f"could not make {folder} read-only ({' '.join(map(str, command))}): {done.stderr}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=True)

    return make


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """W&B offline with no account: no netrc, and a fake key in the environment to prove it is not written."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NETRC", str(tmp_path / "home" / ".netrc"))
