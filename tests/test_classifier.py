"""The digit classifier behind the "clear digit" measures: quality on real MNIST, caching on disk and in memory."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_mnist
from torchvision.datasets import MNIST

from vae_lightning.errors import ConfigError
from vae_lightning.experiments import digit_classifier
from vae_lightning.experiments.classifier import NO_DIGIT, judge, synthetic_non_digits


@pytest.mark.slow
def test_real_digits_are_clear_and_noise_is_not(real_mnist):
    """Trains the classifier on the real set (about 30 s on 2 cores)."""
    classifier, report = digit_classifier(str(real_mnist))
    assert report["test_accuracy"] > 0.97 and report["test_clear"] > 0.95 and report["noise_rejected"] > 0.9

    test = MNIST(str(real_mnist), train=False)
    test_x, test_y = test.data, test.targets
    digits = test_x[:500].float().div(255).unsqueeze(1)
    on_digits = judge(classifier, digits)
    assert (on_digits.digit == test_y[:500]).float().mean() > 0.97
    assert on_digits.clear.float().mean() > 0.95

    generator = torch.Generator().manual_seed(7)
    speckle = (torch.rand(200, 1, 28, 28, generator=generator) < 0.3).float()
    blank = torch.zeros(1, 1, 28, 28)
    grey = torch.full((1, 1, 28, 28), 0.5)
    for name, images in (("speckle", speckle), ("blank", blank), ("grey", grey)):
        assert not judge(classifier, images).clear.any(), name
    # overlays of two different digits are mostly no clear digit (some do look like one: a 1 over an 8)
    first, second = torch.randint(0, 10_000, (2, 2000), generator=generator)
    different = test_y[first] != test_y[second]
    overlays = 0.5 * (test_x[first[different]] + test_x[second[different]]).float().div(255).unsqueeze(1)
    assert judge(classifier, overlays).clear.float().mean() < 0.4


def test_the_classifier_is_trained_once_per_data_dir_then_loaded_and_rebuilt_when_damaged(tmp_path):
    make_tiny_mnist(tmp_path / "data")
    data_dir = str(tmp_path / "data")
    classifier, report = digit_classifier(data_dir)
    assert digit_classifier(data_dir)[0] is classifier  # kept in memory for the process
    (path,) = (tmp_path / "data" / "classifiers").iterdir()  # and cached beside the data
    stamp = path.stat().st_mtime_ns
    digit_classifier.cache_clear()  # a new process: loaded from the cache, not trained again
    again, again_report = digit_classifier(data_dir)
    assert again is not classifier and again_report == report and path.stat().st_mtime_ns == stamp
    probe = torch.rand(4, 1, 28, 28)
    assert torch.equal(judge(classifier, probe).probs, judge(again, probe).probs)

    path.write_bytes(b"damaged")  # a damaged cache is rebuilt, not trusted
    digit_classifier.cache_clear()
    rebuilt, _ = digit_classifier(data_dir)
    assert torch.load(path, weights_only=True)["report"]["test_accuracy"] >= 0
    assert judge(rebuilt, probe).probs.shape == (4, NO_DIGIT + 1)


def test_synthetic_non_digits_are_images_in_range():
    images = torch.rand(50, 1, 28, 28)
    labels = torch.arange(50) % 10
    made = synthetic_non_digits(images, labels, 300, torch.Generator().manual_seed(0))
    assert made.shape == (300, 1, 28, 28) and made.min() >= 0 and made.max() <= 1


def test_a_read_only_data_dir_caches_the_classifier_in_the_user_cache(tmp_path, monkeypatch, read_only):
    make_tiny_mnist(tmp_path / "data")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    digit_classifier.cache_clear()
    with read_only(tmp_path / "data"):
        digit_classifier(str(tmp_path / "data"))
        assert [p.parent for p in (tmp_path / "user-cache").rglob("digits-*.pt")] == [
            tmp_path / "user-cache" / "vae-lightning" / "classifiers"
        ]
        assert not (tmp_path / "data" / "classifiers").exists()
    (tmp_path / "no-cache").mkdir()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "no-cache"))
    digit_classifier.cache_clear()
    refused = pytest.raises(ConfigError, match=r"digit classifier's cache \(XDG_CACHE_HOME, as data.data_dir is")
    with read_only(tmp_path / "data"), read_only(tmp_path / "no-cache"), refused:
        digit_classifier(str(tmp_path / "data"))  # nowhere to write: refused before any training
