"""MNIST files (`files.py`) -> verified in-memory uint8 splits -> batches gathered by index; every stream's seed."""

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchvision.datasets import MNIST

from vae_lightning.data.files import MNIST_FILES, check_data_dir, check_file, default_data_dir, ensure_mnist
from vae_lightning.errors import ConfigError


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix64 steps), so streams never overlap by accident."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state >> 1


def seeded_normal(seed: int, index: Tensor, num_samples: int, size: int, *stream: int) -> Tensor:
    """Standard-normal noise (num_samples, B, size), each image's from (seed, stream..., its index): batch-invariant."""
    noise = torch.empty(len(index), num_samples, size, device=index.device)
    generator = torch.Generator(index.device)
    for row, item in enumerate(index.tolist()):
        generator.manual_seed(mix_seed(seed, stream[0], item, *stream[1:]))
        torch.randn(num_samples, size, generator=generator, device=index.device, out=noise[row])
    return noise.transpose(0, 1)


@dataclass(eq=False)
class ShardedBatchSampler:
    """This rank's index batches: global batches of each epoch's order (0..N-1, shuffled by seed and epoch in training)
    split as `b[rank::world_size]`; in training a last global batch smaller than `world_size` is dropped."""

    num_items: int
    batch_size: int
    train: bool
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    device: torch.device | str = "cpu"  # where the batches of indices are made
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        return full + int(rest > 0 and not (self.train and rest < self.world_size))

    def __iter__(self) -> Iterator[Tensor]:
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        order = torch.randperm(self.num_items, generator=generator) if self.train else torch.arange(self.num_items)
        order = order.to(self.device, non_blocking=True)  # one copy per epoch, then views
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            if len(shard := order[start : start + self.batch_size][self.rank :: self.world_size]):
                yield shard


@dataclass(eq=False, repr=False)
class TensorBatchLoader:
    """`(pixels, labels)` in `sampler`'s batches: pixels float32 (B, 1, 28, 28) in [0, 1], redrawn as Bernoulli(p) by
    `dynamic_binarization` (seeded by sampler seed, epoch, rank, position); `with_index` adds the indices (B,)."""

    images: Tensor  # uint8 (N, 28, 28)
    labels: Tensor  # int64 (N,)
    sampler: ShardedBatchSampler
    dynamic_binarization: bool = False
    with_index: bool = False

    def __post_init__(self) -> None:
        self.batch_sampler = self.sampler  # DataLoader-like: Lightning reads these and calls their `set_epoch`
        self.served, self.resume = 0, None  # batches served this epoch; (epoch, batches) to skip when it starts

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch = self.sampler.epoch
        skip = self.resume[1] if self.resume is not None and self.resume[0] == epoch else 0  # resumed in this epoch
        self.resume, self.served = None, skip
        scale = torch.tensor(255.0, dtype=torch.float32, device=self.images.device)  # bytes / 255: float32, one op
        generator = torch.Generator(self.images.device) if self.dynamic_binarization else None
        for number, index in islice(enumerate(self.sampler), skip, None):
            pixels = self.images.index_select(0, index).unsqueeze(1).div(scale)  # float32 (B, 1, 28, 28)
            if generator is not None:
                generator.manual_seed(mix_seed(self.sampler.seed, epoch, self.sampler.rank, number, 0xB1))
                pixels = torch.bernoulli(pixels, generator=generator)
            labels = self.labels.index_select(0, index)  # index_select: faster than [index] on a CPU
            self.served = number + 1
            yield (pixels, labels, index) if self.with_index else (pixels, labels)


class MNISTDataModule(LightningDataModule):
    """MNIST from its four IDX files, held in memory, served in batches gathered by index (test: the official 10,000).

    Args:
        data_dir: folder holding `MNIST/raw/<file>`; default `$VAE_LIGHTNING_DATA_DIR`, else `~/.cache/vae-lightning`.
        batch_size: global training batch size, split evenly across DDP processes.
        val_size: training images held out (chosen by `seed`) to validate; 0: none, so no `val/*`, only `last.ckpt`.
        seed: seeds the validation split, the shuffling and the binarization.
        binarize: `none`: x/255; `dynamic`: Bernoulli(x/255), redrawn for training, once for evaluation; `static`: once.
        download: fetch missing files (torchvision's download, else the package index); false: only files there.
        eval_batch_size: global batch size for validation, test and predict (no gradients, so larger).
        predict_split: the split `predict` runs on.
        data_on_device: keep the splits on the accelerator (CUDA) so batches never cross the bus.
        checksums: SHA-256 of each uncompressed file by name, replacing the official ones (IDX files of your own).
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: PositiveInt = 100,
        val_size: NonNegativeInt = 5000,
        seed: int = 0,
        binarize: Literal["none", "dynamic", "static"] = "none",
        download: bool = True,
        eval_batch_size: PositiveInt = 1000,
        predict_split: Literal["train", "val", "test"] = "test",
        data_on_device: bool = True,
        checksums: dict[str, str] | None = None,
    ) -> None:
        batch_size, val_size, eval_batch_size = int(batch_size), int(val_size), int(eval_batch_size)  # for checkpoints
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = check_data_dir(data_dir if data_dir is not None else default_data_dir(), "data.data_dir")
        if predict_split == "val" and val_size == 0:
            raise ConfigError("data.predict_split: val holds no images with data.val_size: 0: choose train or test.")
        self.batch_size, self.val_size, self.eval_batch_size, self.seed = batch_size, val_size, eval_batch_size, seed
        self.binarize, self.download, self.predict_split = binarize, download, predict_split
        self.data_on_device = data_on_device
        if missing := sorted(set(MNIST_FILES) - set(checksums or MNIST_FILES)):
            raise ConfigError(f"data.checksums lacks {missing}: give a SHA-256 for each of the four files.")
        self.files = {name: (checksums or MNIST_FILES)[name] for name in MNIST_FILES}
        self.splits: dict[str, tuple[Tensor, Tensor]] | None = None

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, download=self.download, checksums=self.files, field="data.data_dir")

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:  # fit then test, or several stages: load once
            return
        raw = self.data_dir / "MNIST" / "raw"
        if problems := [f"{name} {why}" for name, sha in self.files.items() if (why := check_file(raw / name, sha))]:
            fix = "call prepare_data() first (a Trainer does), with data.download true or the files put there by hand"
            raise ConfigError(f"MNIST files in {raw} are not ready ({'; '.join(problems)}): {fix}.")
        train, test = (MNIST(self.data_dir, train=part, download=False) for part in (True, False))
        images, labels = train.data, train.targets
        for name, (x, y) in {"train": (images, labels), "test": (test.data, test.targets)}.items():
            if x.shape[1:] != (28, 28) or len(x) != len(y) or not 0 <= y.min() <= y.max() <= 9:
                shapes = f"hold {tuple(x.shape)} images and {len(y)} labels; expected (N, 28, 28) and N labels in 0..9"
                raise ConfigError(f"MNIST {name} files in {raw} {shapes}.")
        if self.val_size >= len(images):
            raise ConfigError(f"data.val_size={self.val_size} leaves no training images: choose under {len(images)}.")
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(mix_seed(self.seed, 0x5A1)))
        index = {"train": order[self.val_size :].sort().values, "val": order[: self.val_size].sort().values}
        splits = {name: (images[i], labels[i]) for name, i in index.items()} | {"test": (test.data, test.targets)}
        fixed = {"static": ("train", "val", "test"), "dynamic": ("val", "test")}.get(self.binarize, ())
        for number, name in enumerate(fixed):
            x, y = splits[name]
            generator = torch.Generator().manual_seed(mix_seed(self.seed, 0xB1, number))
            splits[name] = (torch.bernoulli(x.float().div_(255.0), generator=generator).to(torch.uint8).mul_(255), y)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        device = device if self.data_on_device and device.type == "cuda" else torch.device("cpu")
        self.splits = {name: (x.to(device).contiguous(), y.to(device)) for name, (x, y) in splits.items()}
        sizes = ", ".join(f"{name} {len(y):,}" for name, (_, y) in self.splits.items())
        rank_zero_info(f"MNIST: {sizes} on {device} (binarize={self.binarize})")

    def train_pixel_mean(self) -> Tensor:
        """The training split's mean pixels (1, 28, 28) in [0, 1] (with `dynamic`: of the probabilities drawn from)."""
        return self.splits["train"][0].double().mean(0).div(255.0).unsqueeze(0).float().cpu()

    def _loader(self, split: str, train: bool) -> TensorBatchLoader:
        images, labels = self.splits[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        batch_size = self.batch_size if train else self.eval_batch_size
        if train and batch_size % world:
            fix = f"choose a multiple of {world}, e.g. {world * max(1, batch_size // world)} (the global batch size)"
            raise ConfigError(f"data.batch_size={batch_size} must split across {world} processes evenly: {fix}.")
        sampler = ShardedBatchSampler(len(images), batch_size, train, self.seed, rank, world, images.device)
        return TensorBatchLoader(images, labels, sampler, train and self.binarize == "dynamic", with_index=not train)

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatchLoader | list:
        return self._loader("val", train=False) if self.val_size else []  # []: Lightning skips validation

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.predict_split, train=False)
