"""The judge of the "clear digit" measures: a small CNN telling which of the ten digits an image shows, or NO_DIGIT,
trained on MNIST (half of each batch blurred and dimmed, as decoders draw soft, grey strokes) plus synthetic
non-digits. An image is a *clear digit* when the top class is a digit with probability >= CLEAR_THRESHOLD."""

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.datasets import MNIST

from vae_lightning.data.files import user_cache_dir
from vae_lightning.errors import ConfigError
from vae_lightning.runs import check_writable, save_atomically

log = logging.getLogger(__name__)

NO_DIGIT = 10  # the eleventh class
CLEAR_THRESHOLD = 0.8
VERSION = "v2"  # of the layers and the training, in the cache's name: a change retrains


class DigitClassifier(nn.Sequential):
    """(B, 1, 28, 28) pixels in [0, 1] -> 11 logits: digits 0-9 and NO_DIGIT."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, 14, 14)
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 7, 7)
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Dropout(0.25),
            nn.Linear(128, NO_DIGIT + 1),
        )  # fmt: skip


@dataclass
class Judgement:
    probs: Tensor  # (N, 11) softmax over the digits and NO_DIGIT
    digit: Tensor  # (N,) top class, 0-9 or NO_DIGIT
    clear: Tensor  # (N,) bool: top class is a digit with probability >= CLEAR_THRESHOLD


@torch.no_grad()
def judge(classifier: DigitClassifier, pixels: Tensor) -> Judgement:
    """Classify pixel probabilities (N, 1, 28, 28) on the CPU, in eval mode."""
    classifier.eval()
    probs = torch.cat([classifier(chunk.float()).softmax(-1) for chunk in pixels.split(4096)])
    top, digit = probs.max(-1)
    return Judgement(probs, digit, (digit != NO_DIGIT) & (top >= CLEAR_THRESHOLD))


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
    """n images (n, 1, 28, 28) in [0, 1] showing no single digit, a third each: speckle noise of random density,
    smooth random blobs, overlays of two different digits (softened like the digits: blur alone never tells)."""
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


@functools.lru_cache(maxsize=4)
def digit_classifier(data_dir: str) -> tuple[DigitClassifier, dict[str, float]]:
    """The classifier of `data_dir`'s MNIST files and its report: `test_accuracy`, `test_clear` (share of the test
    digits judged clear), `noise_rejected` (share of synthetic non-digits judged not clear). Kept for the process and
    in `<data_dir>/classifiers` (the user cache if read-only) under the training images' hash; else trained, seeded."""
    train, test = MNIST(data_dir, train=True), MNIST(data_dir, train=False)
    try:
        folder = check_writable(Path(data_dir) / "classifiers", "the digit classifier's cache")
    except ConfigError:
        field = "the digit classifier's cache (XDG_CACHE_HOME, as data.data_dir is read-only)"
        folder = check_writable(user_cache_dir() / "classifiers", field)
    path = folder / f"digits-{VERSION}-{hashlib.sha256(train.data.numpy().tobytes()).hexdigest()[:16]}.pt"
    with torch.random.fork_rng(devices=[]):  # initialisation and dropout seeded, the caller's streams untouched
        torch.manual_seed(0)
        classifier = DigitClassifier()
        if path.is_file():
            try:
                saved = torch.load(path, weights_only=True)
                classifier.load_state_dict(saved["state_dict"])
                return classifier.eval(), saved["report"]
            except Exception as err:
                log.warning("digit classifier: cache %s unreadable (%s); training again", path, err)
        log.info("digit classifier: training once on %d images (cached at %s)", len(train.data), path)
        generator = torch.Generator().manual_seed(0)
        pixels, labels, batch_size, epochs = train.data.float().div(255).unsqueeze(1), train.targets, 128, 3
        optimizer = torch.optim.Adam(classifier.parameters(), lr=1e-3)
        for epoch in range(epochs):
            for index in torch.randperm(len(pixels), generator=generator).split(batch_size):
                digits = pixels[index]  # (B, 1, 28, 28), half of them softened, plus B // 10 non-digits
                half = torch.rand(len(index), generator=generator) < 0.5
                digits[half] = soften(digits[half], generator)
                x = torch.cat([digits, synthetic_non_digits(pixels, labels, batch_size // 10, generator)])
                y = torch.cat([labels[index], torch.full((batch_size // 10,), NO_DIGIT)])
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(classifier(x), y).backward()
                optimizer.step()
            log.info("digit classifier: epoch %d/%d done", epoch + 1, epochs)
    on_test = judge(classifier, test.data.float().div(255).unsqueeze(1))
    noise = synthetic_non_digits(pixels, labels, 2000, torch.Generator().manual_seed(1))
    report = {
        "test_accuracy": (on_test.digit == test.targets).float().mean().item(),
        "test_clear": on_test.clear.float().mean().item(),
        "noise_rejected": 1.0 - judge(classifier, noise).clear.float().mean().item(),
    }
    log.info("digit classifier: %s", ", ".join(f"{k} {v:.4f}" for k, v in report.items()))
    save_atomically({"state_dict": classifier.state_dict(), "report": report}, path)
    return classifier.eval(), report
