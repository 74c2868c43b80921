"""Batches gathered by index from in-memory uint8 tensors: no per-sample Python, no PIL.

`ShardedBatchSampler` decides which images form each batch on this rank; `TensorBatchLoader`
gathers them, turns bytes into pixels in [0, 1] and (optionally) draws Bernoulli pixels.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix64 steps), so streams never overlap by accident."""
    state = 0x9E3779B97F4A7C15
    for part in parts:
        state = (state ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 29
    return state >> 1


def seeded_normal(seed: int, index: Tensor, num_samples: int, size: int, *stream: int) -> Tensor:
    """Standard-normal noise (num_samples, B, size), each image's a fixed function of (seed, stream...,
    its dataset index), so evaluation does not depend on the batch size, the process count or the epoch."""
    noise = torch.empty(len(index), num_samples, size, device=index.device)
    generator = torch.Generator(index.device)
    for row, item in enumerate(index.tolist()):
        generator.manual_seed(mix_seed(seed, stream[0], item, *stream[1:]))
        torch.randn(num_samples, size, generator=generator, device=index.device, out=noise[row])
    return noise.transpose(0, 1)


class ShardedBatchSampler:
    """Index batches for one rank of `world_size`.

    Each epoch the items are put in order (a permutation seeded by `seed` and the epoch when
    `shuffle`, else 0..N-1), cut into global batches of `batch_size`, and global batch `b` is split
    across ranks as `b[rank::world_size]`. So every rank sees the same number of batches, the
    shards are disjoint, and together they cover the items once per epoch. A last global batch
    smaller than `world_size` is dropped when `drop_small_last` (training: every rank must step).

    Lightning calls `set_epoch` at the start of every epoch (it finds this object as `loader.sampler`).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_small_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.num_items, self.batch_size, self.shuffle, self.seed = num_items, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_small_last = rank, world_size, drop_small_last
        self.device = torch.device(device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.num_items, self.batch_size)
        keep_rest = rest > 0 and not (self.drop_small_last and rest < self.world_size)
        return full + int(keep_rest)

    def order(self) -> Tensor:
        """This epoch's order of all items (the same on every rank)."""
        if not self.shuffle:
            return torch.arange(self.num_items)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
        return torch.randperm(self.num_items, generator=generator)

    def __iter__(self) -> Iterator[Tensor]:
        order = self.order().to(self.device, non_blocking=True)  # one copy per epoch, then views
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            shard = order[start : start + self.batch_size][self.rank :: self.world_size]
            if len(shard):
                yield shard


class TensorBatchLoader:
    """Iterates `(pixels, labels)` from uint8 images `(N, 28, 28)` and int64 labels `(N,)`.

    Pixels come out as float32 `(B, 1, 28, 28)` in [0, 1]; with `dynamic_binarization` each pixel
    is redrawn as Bernoulli(p) every time the image is served (each batch seeded by seed, epoch,
    rank and its position, so any batch can be reproduced on its own). With `with_index` the batch
    also carries the items' indices (for evaluation and prediction).

    Resumable: `state_dict()` records the epoch and how many batches were served; Lightning saves it
    in checkpoints and, on resume, `load_state_dict()` makes the same epoch continue where it stopped.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        sampler: ShardedBatchSampler,
        dynamic_binarization: bool = False,
        seed: int = 0,
        with_index: bool = False,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(f"images must be uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images, self.labels = images, labels
        # bytes / 255 in one op, float32 whatever torch's default dtype (a float32 0-dim divisor sets it)
        self._255 = torch.tensor(255.0, dtype=torch.float32, device=images.device)
        # DataLoader-like attributes: Lightning calls `sampler.set_epoch` each epoch through them.
        self.sampler = self.batch_sampler = sampler
        self.dynamic_binarization, self.seed, self.with_index = dynamic_binarization, seed, with_index
        self._served = 0  # batches served in the current epoch
        self._resume: tuple[int, int] | None = None  # (epoch, batches) to skip when that epoch starts

    def __len__(self) -> int:
        return len(self.sampler)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        epoch, skip = self.sampler.epoch, 0
        if self._resume is not None and self._resume[0] == epoch:  # a checkpoint from inside this epoch
            skip = self._resume[1]
        self._resume, self._served = None, skip
        generator = torch.Generator(self.images.device) if self.dynamic_binarization else None
        for number, index in enumerate(self.sampler):
            if number < skip:
                continue
            pixels = self.images.index_select(0, index).unsqueeze(1).div(self._255)  # float32 (B, 1, 28, 28)
            if generator is not None:
                generator.manual_seed(mix_seed(self.seed, epoch, self.sampler.rank, number, 0xB1))
                pixels = torch.bernoulli(pixels, generator=generator)
            labels = self.labels.index_select(0, index)  # index_select: faster than [index] on a CPU
            self._served = number + 1
            yield (pixels, labels, index) if self.with_index else (pixels, labels)
