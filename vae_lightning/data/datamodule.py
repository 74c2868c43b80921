"""`MNISTDataModule`: verified MNIST files -> in-memory uint8 splits -> batches gathered by index."""

from __future__ import annotations

import logging
from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torchvision.datasets import MNIST

from vae_lightning.data.files import MNIST_FILES, check_data_dir, check_file, default_data_dir, ensure_mnist, raw_dir
from vae_lightning.data.loaders import ShardedBatchSampler, TensorBatchLoader, mix_seed
from vae_lightning.errors import ConfigError

log = logging.getLogger(__name__)

Binarize = Literal["none", "dynamic", "static"]
Split = Literal["train", "val", "test"]


class MNISTDataModule(LightningDataModule):
    """MNIST from its four IDX files, held in memory, served in batches gathered by index.

    Splits: `val_size` of the official 60,000 training images (a permutation seeded with `seed`) for validation,
    the rest for training, the official 10,000 for test. Pixels (`binarize`): `none` gives x/255 in [0, 1];
    `dynamic` draws fresh Bernoulli(x/255) pixels every time a training image is served (validation and test
    images are binarized once, with `seed`, so evaluation is repeatable); `static` binarizes every image once.

    Args:
        data_dir: folder holding `MNIST/raw/<file>`; default `$VAE_LIGHTNING_DATA_DIR`, else the user cache
            (`~/.cache/vae-lightning`), so it is fetched once per user, not per run.
        batch_size: global training batch size, split evenly across DDP processes.
        val_size: training images held out for validation; 0 trains on all 60,000 and validates nothing (no
            `val/*` metrics, no best checkpoint: `last.ckpt` only).
        seed: seeds the validation split, the shuffling and the binarization.
        binarize: `none`, `dynamic` or `static` (see above).
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
        binarize: Binarize = "none",
        download: bool = True,
        eval_batch_size: PositiveInt = 1000,
        predict_split: Split = "test",
        data_on_device: bool = True,
        checksums: dict[str, str] | None = None,
    ) -> None:
        # plain ints (the parser gives jsonargparse's int subclasses) in hparams and checkpoints
        batch_size, val_size, eval_batch_size = int(batch_size), int(val_size), int(eval_batch_size)
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = check_data_dir(data_dir if data_dir is not None else default_data_dir(), "data.data_dir")
        self.batch_size, self.val_size, self.eval_batch_size = batch_size, val_size, eval_batch_size
        if predict_split == "val" and val_size == 0:
            raise ConfigError("data.predict_split: val holds no images with data.val_size: 0: choose train or test.")
        self.seed, self.binarize, self.download = seed, binarize, download
        self.predict_split, self.data_on_device = predict_split, data_on_device
        if missing := sorted(set(MNIST_FILES) - set(checksums or MNIST_FILES)):
            raise ConfigError(f"data.checksums lacks {missing}: give a SHA-256 for each of the four files.")
        self.files = {name: (checksums or MNIST_FILES)[name] for name in MNIST_FILES}
        self.splits: dict[str, tuple[Tensor, Tensor]] | None = None

    def prepare_data(self) -> None:
        """Make the four verified files present (one process per node; assigns no state)."""
        ensure_mnist(self.data_dir, download=self.download, checksums=self.files, field="data.data_dir")

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:  # fit then test, or several stages: load once
            return
        raw = raw_dir(self.data_dir)
        if problems := [f"{name} {why}" for name, sha in self.files.items() if (why := check_file(raw / name, sha))]:
            raise ConfigError(
                f"MNIST files in {raw} are not ready ({'; '.join(problems)}): call prepare_data() first "
                f"(a Trainer does), with data.download true or the files put there by hand."
            )
        train, test = (MNIST(self.data_dir, train=part, download=False) for part in (True, False))
        images, labels = train.data, train.targets
        for name, (x, y) in {"train": (images, labels), "test": (test.data, test.targets)}.items():
            if x.dim() != 3 or tuple(x.shape[1:]) != (28, 28) or len(x) != len(y) or y.min() < 0 or y.max() > 9:
                raise ConfigError(
                    f"MNIST {name} files in {raw} hold {tuple(x.shape)} images and {len(y)} labels; "
                    f"expected (N, 28, 28) images and N labels in 0..9."
                )
        if self.val_size >= len(images):
            raise ConfigError(f"data.val_size={self.val_size} leaves no training images: choose under {len(images)}.")

        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(mix_seed(self.seed, 0x5A1)))
        val_index, train_index = order[: self.val_size].sort().values, order[self.val_size :].sort().values
        splits = {
            "train": (images[train_index], labels[train_index]),
            "val": (images[val_index], labels[val_index]),
            "test": (test.data, test.targets),
        }
        fixed = {"static": ("train", "val", "test"), "dynamic": ("val", "test")}.get(self.binarize, ())
        for number, name in enumerate(fixed):
            x, y = splits[name]
            generator = torch.Generator().manual_seed(mix_seed(self.seed, 0xB1, number))
            splits[name] = (torch.bernoulli(x.float().div_(255.0), generator=generator).to(torch.uint8).mul_(255), y)

        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        device = device if self.data_on_device and device.type == "cuda" else torch.device("cpu")
        self.splits = {name: (x.to(device).contiguous(), y.to(device)) for name, (x, y) in splits.items()}
        sizes = ", ".join(f"{name} {len(y):,}" for name, (_, y) in self.splits.items())
        log.info("MNIST: %s on %s (binarize=%s)", sizes, device, self.binarize)

    def train_pixel_mean(self) -> Tensor:
        """The training split's mean pixel values, (1, 28, 28) in [0, 1] (binarized ones with `static`; with
        `dynamic`, the mean of the probabilities the images are drawn from)."""
        return self.splits["train"][0].double().mean(0).div(255.0).unsqueeze(0).float().cpu()

    def transfer_batch_to_device(self, batch: tuple[Tensor, ...], device: torch.device, dataloader_idx: int):
        """Batches already on `device` (gathered where their split lives) pass as they are (Lightning's generic move
        walks the batch every step); others are moved."""
        if all(t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _loader(self, split: Split, train: bool) -> TensorBatchLoader:
        """Training batches are (pixels, labels); evaluation batches add the images' indices."""
        images, labels = self.splits[split]
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        batch_size = self.batch_size if train else self.eval_batch_size
        if train and batch_size % world:
            raise ConfigError(
                f"data.batch_size={batch_size} is the global batch size and must divide evenly across the {world} "
                f"processes (world size): choose a multiple of {world}, e.g. {world * max(1, batch_size // world)}."
            )
        # training: shuffled, and a last batch too small to give every rank an image dropped
        sampler = ShardedBatchSampler(len(images), batch_size, train, self.seed, rank, world, train, images.device)
        dynamic = train and self.binarize == "dynamic"
        return TensorBatchLoader(
            images, labels, sampler, dynamic_binarization=dynamic, seed=self.seed, with_index=not train
        )

    def train_dataloader(self) -> TensorBatchLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> TensorBatchLoader | list:
        """The validation batches; none (an empty list: Lightning then skips validation) with `val_size: 0`."""
        return self._loader("val", train=False) if self.val_size else []

    def test_dataloader(self) -> TensorBatchLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> TensorBatchLoader:
        return self._loader(self.predict_split, train=False)
