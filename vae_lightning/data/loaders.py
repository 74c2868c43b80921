"""Batches gathered by index from in-memory uint8 tensors (no per-sample Python, no PIL); every random stream's seed."""

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

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
