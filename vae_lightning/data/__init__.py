"""`MNISTDataModule`: MNIST files (`files.py`) -> verified in-memory uint8 splits -> batches by index (`loaders.py`)."""

from typing import Literal

import torch
from jsonargparse.typing import NonNegativeInt, PositiveInt
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchvision.datasets import MNIST

from vae_lightning.data.files import MNIST_FILES, check_data_dir, check_file, default_data_dir, ensure_mnist
from vae_lightning.data.loaders import ShardedBatchSampler, TensorBatchLoader, mix_seed
from vae_lightning.errors import ConfigError


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
        val_index, train_index = order[: self.val_size].sort().values, order[self.val_size :].sort().values
        splits = {name: (images[index], labels[index]) for name, index in (("train", train_index), ("val", val_index))}
        splits["test"] = (test.data, test.targets)
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
