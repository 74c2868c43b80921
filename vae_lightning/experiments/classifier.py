"""The judge of the "clear digit" and "noise" measures: a small CNN telling which digit an image shows, or none.

11 classes, the ten digits and NO_DIGIT, trained on the MNIST training images (half of each batch blurred and
dimmed, since decoders draw grey, soft strokes) plus synthetic non-digits (speckle noise, smooth blobs, overlays
of two different digits). An image is a *clear digit* when the top class is a digit with probability at least
`CLEAR_THRESHOLD`. Trained once and cached, with its scores, as `<data_dir>/classifiers/digits-v1-<hash of the
training images>.pt` (in `~/.cache/vae-lightning/classifiers` when the data dir is read-only).
"""

import functools
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.datasets import MNIST

from vae_lightning.atomic import save_atomically
from vae_lightning.data.files import user_cache_dir
from vae_lightning.errors import ConfigError
from vae_lightning.runs import check_writable

log = logging.getLogger(__name__)

NO_DIGIT = 10  # the eleventh class
CLEAR_THRESHOLD = 0.8
VERSION = "v1"


class DigitClassifier(nn.Module):
    """(B, 1, 28, 28) pixels in [0, 1] -> 11 logits: digits 0-9 and NO_DIGIT."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, NO_DIGIT + 1),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass
class Judgement:
    """What the classifier says of N images."""

    probs: Tensor  # (N, 11) softmax over the digits and NO_DIGIT
    digit: Tensor  # (N,) top class, 0-9 or NO_DIGIT
    clear: Tensor  # (N,) bool: top class is a digit with probability >= CLEAR_THRESHOLD


@torch.no_grad()
def judge(classifier: DigitClassifier, pixels: Tensor, threshold: float = CLEAR_THRESHOLD) -> Judgement:
    """Classify pixel probabilities (N, 1, 28, 28) in eval mode; a digit is 'clear' at probability >= threshold."""
    classifier.eval()
    device = next(classifier.parameters()).device
    probs = torch.cat([classifier(chunk.to(device).float()).softmax(-1).cpu() for chunk in pixels.split(4096)])
    top, digit = probs.max(-1)
    return Judgement(probs, digit, (digit != NO_DIGIT) & (top >= threshold))


def soften(images: Tensor, generator: torch.Generator) -> Tensor:
    """Random Gaussian blur (sigma 0 to 1.5 pixels) and contrast (0.6 to 1): digits as decoders draw them."""
    n = len(images)
    if n == 0:
        return images
    sigma = torch.rand(n, generator=generator) * 1.5  # (n,)
    offsets = torch.arange(-3, 4, dtype=torch.float32)  # a 7-tap kernel
    kernel = torch.exp(-0.5 * (offsets / sigma.clamp(min=1e-3).unsqueeze(1)) ** 2)  # (n, 7)
    kernel = (kernel / kernel.sum(1, keepdim=True)).view(n, 1, 1, 7)
    rows = F.conv2d(images.transpose(0, 1), kernel, padding=(0, 3), groups=n)  # each image its own kernel
    both = F.conv2d(rows, kernel.transpose(2, 3), padding=(3, 0), groups=n).transpose(0, 1)
    contrast = torch.rand(n, 1, 1, 1, generator=generator) * 0.4 + 0.6
    return (both * contrast).clamp(0, 1)


def synthetic_non_digits(images: Tensor, labels: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """n images (n, 1, 28, 28) in [0, 1] that show no single digit.

    A third each: speckle noise of random density, smooth random blobs, and even overlays of two
    digits of different classes (then softened like the digits, so blur alone never tells).
    """
    kinds = torch.randint(0, 3, (n,), generator=generator)
    out = torch.empty(n, 1, 28, 28)
    count = [(kinds == k).sum().item() for k in range(3)]
    density = torch.rand(count[0], 1, 1, 1, generator=generator) * 0.5 + 0.02
    out[kinds == 0] = (torch.rand(count[0], 1, 28, 28, generator=generator) < density).float()
    coarse = torch.rand(count[1], 1, 7, 7, generator=generator)
    blobs = F.interpolate(coarse, size=(28, 28), mode="bilinear", align_corners=False)
    out[kinds == 1] = (blobs - blobs.amin((2, 3), keepdim=True)).clamp(0, 1) ** 2
    first = torch.randint(0, len(images), (count[2],), generator=generator)
    second = torch.randint(0, len(images), (count[2],), generator=generator)
    clash = labels[first] == labels[second]
    second[clash] = (second[clash] + 1) % len(images)  # most clashes resolve; the rest stay overlays
    out[kinds == 2] = soften(0.5 * (images[first] + images[second]), generator)
    return out


def train_classifier(
    images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor, epochs: int = 3, batch_size: int = 128
) -> tuple[DigitClassifier, dict[str, float]]:
    """Train on uint8 images (N, 28, 28) plus as many synthetic non-digits as a tenth of them, seeded.

    Returns the classifier (eval mode) and its report: `test_accuracy` on the real test digits, `test_clear`
    (fraction of test digits judged clear), `noise_rejected` (fraction of fresh synthetic non-digits judged not
    clear).
    """
    generator = torch.Generator().manual_seed(0)
    pixels = images.float().div(255).unsqueeze(1)  # (N, 1, 28, 28)
    negatives = max(1, batch_size // 10)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # initialisation and dropout seeded, the caller's streams untouched
        torch.manual_seed(0)
        classifier = DigitClassifier()
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
        for epoch in range(epochs):
            for index in torch.randperm(len(pixels), generator=generator).split(batch_size):
                digits = pixels[index]
                half = torch.rand(len(index), generator=generator) < 0.5  # half of the digits softened
                digits[half] = soften(digits[half], generator)
                x = torch.cat([digits, synthetic_non_digits(pixels, labels, negatives, generator)])
                y = torch.cat([labels[index].long(), torch.full((negatives,), NO_DIGIT)])
                loss = F.cross_entropy(classifier(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            log.info("digit classifier: epoch %d/%d done (%.0f s)", epoch + 1, epochs, time.perf_counter() - start)
    classifier.eval()
    on_test = judge(classifier, test_images.float().div(255).unsqueeze(1))
    noise = synthetic_non_digits(pixels, labels, 2000, torch.Generator().manual_seed(1))
    report = {
        "test_accuracy": (on_test.digit == test_labels.long()).float().mean().item(),
        "test_clear": on_test.clear.float().mean().item(),
        "noise_rejected": 1.0 - judge(classifier, noise).clear.float().mean().item(),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return classifier, report


def cache_dirs(data_dir: str | os.PathLike) -> list[Path]:
    """Where the classifier of `data_dir`'s MNIST files is looked for, in order; it is written to the first writable."""
    return [Path(data_dir) / "classifiers", user_cache_dir() / "classifiers"]


def writable_cache_dir(data_dir: str | os.PathLike) -> Path:
    """The first of `cache_dirs(data_dir)` a new classifier can be written to, or a ConfigError naming them."""
    reasons = []
    for folder in cache_dirs(data_dir):
        try:
            return check_writable(folder, "the digit classifier's cache")
        except ConfigError as err:
            reasons.append(str(err))
    raise ConfigError(
        f"the experiments' digit classifier cannot be cached: {' '.join(reasons)} Make data.data_dir writable, "
        f"or set XDG_CACHE_HOME to a writable folder."
    )


def check_cache(data_dir: str | os.PathLike) -> None:
    """Before any work: a classifier is cached for `data_dir` already, or one can be written (ConfigError)."""
    if not any(any(folder.glob(f"digits-{VERSION}-*.pt")) for folder in cache_dirs(data_dir) if folder.is_dir()):
        writable_cache_dir(data_dir)


def cached_classifier(
    data_dir: str | os.PathLike, images: Tensor, labels: Tensor, test_images: Tensor, test_labels: Tensor
) -> tuple[DigitClassifier, dict[str, float]]:
    """Load the classifier trained on exactly these images from `cache_dirs(data_dir)`, or train and cache it."""
    digest = hashlib.sha256(images.contiguous().cpu().numpy().tobytes()).hexdigest()[:16]
    name = f"digits-{VERSION}-{digest}.pt"
    for path in (folder / name for folder in cache_dirs(data_dir)):
        if not path.is_file():
            continue
        try:
            saved = torch.load(path, weights_only=True)
            with torch.random.fork_rng(devices=[]):  # layer initialisation draws random numbers
                classifier = DigitClassifier()
            classifier.load_state_dict(saved["state_dict"])
            return classifier.eval(), saved["report"]
        except Exception as err:
            log.warning("digit classifier: cache %s unreadable (%s); training again", path, err)
    path = writable_cache_dir(data_dir) / name  # checked before the training it would otherwise waste
    log.info("digit classifier: training once on %d images (cached at %s)", len(images), path)
    classifier, report = train_classifier(images.cpu(), labels.cpu(), test_images.cpu(), test_labels.cpu())
    log.info(
        "digit classifier: test accuracy %.4f, test digits clear %.4f, non-digits rejected %.4f",
        *(report[k] for k in ("test_accuracy", "test_clear", "noise_rejected")),
    )
    save_atomically({"state_dict": classifier.state_dict(), "report": report}, path)
    return classifier, report


@functools.lru_cache(maxsize=4)
def digit_classifier(data_dir: str) -> tuple[DigitClassifier, dict[str, float]]:
    """The digit classifier of `data_dir`'s MNIST files and its report: cached on disk and kept for the process."""
    train, test = MNIST(data_dir, train=True), MNIST(data_dir, train=False)
    return cached_classifier(data_dir, train.data, train.targets, test.data, test.targets)
