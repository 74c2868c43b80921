"""MNISTDataModule: splits, pixel modes, sharding, device, and refusal of bad input."""

from __future__ import annotations

import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser
from lightning.pytorch import Trainer

from vae_lightning.data import MNISTDataModule, ShardedBatchSampler
from vae_lightning.errors import ConfigError


def make(tiny_mnist, **kwargs) -> MNISTDataModule:
    data_dir, checksums = tiny_mnist
    kwargs = {"val_size": 50, "batch_size": 20, "eval_batch_size": 30, "download": False, **kwargs}
    dm = MNISTDataModule(data_dir=str(data_dir), checksums=checksums, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def codes(images: torch.Tensor) -> set[int]:
    """The unique code the tiny set writes into each image's first row."""
    bits = (images[:, 0, :16] > 127).long()
    return set((bits * (2 ** torch.arange(16))).sum(1).tolist())


def epoch(loader, number=0):
    loader.sampler.set_epoch(number)
    return list(loader)


def test_splits_have_the_right_sizes_are_disjoint_and_cover_the_training_set(tiny_mnist):
    dm = make(tiny_mnist)
    sizes = {name: len(labels) for name, (_, labels) in dm.splits.items()}
    assert sizes == {"train": 250, "val": 50, "test": 100}
    train, val = codes(dm.splits["train"][0]), codes(dm.splits["val"][0])
    assert not train & val and train | val == set(range(300))


def test_the_validation_split_is_fixed_by_the_seed(tiny_mnist):
    first, again, other = make(tiny_mnist), make(tiny_mnist), make(tiny_mnist, seed=1)
    assert torch.equal(first.splits["val"][0], again.splits["val"][0])
    assert not torch.equal(first.splits["val"][0], other.splits["val"][0])


def test_batches_are_float_pixels_with_labels_and_every_image_once_per_epoch(tiny_mnist):
    dm = make(tiny_mnist)
    batches = epoch(dm.train_dataloader())
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (20, 1, 28, 28) and y.dtype == torch.int64
    assert len(batches) == len(dm.train_dataloader()) == 13  # 250 = 12 x 20 + 10
    seen = torch.cat([b[0] for b in batches]).squeeze(1).mul(255).round().to(torch.uint8)
    assert len(seen) == 250 and codes(seen) == codes(dm.splits["train"][0])
    x, y, index = next(iter(dm.test_dataloader()))  # evaluation batches carry the images' indices
    assert torch.equal(index, torch.arange(30)) and torch.equal(y, dm.splits["test"][1][:30])


def test_batches_already_on_the_device_are_not_copied_others_are_moved(tiny_mnist):
    dm = make(tiny_mnist)
    batch = next(iter(dm.train_dataloader()))
    same = dm.transfer_batch_to_device(batch, torch.device("cpu"), 0)
    assert all(a is b for a, b in zip(same, batch, strict=True))  # gathered where the split lives: no copy
    moved = dm.transfer_batch_to_device(batch, torch.device("meta"), 0)  # a device CI has: Lightning's move
    assert [t.device.type for t in moved] == ["meta", "meta"] and moved[0].shape == batch[0].shape


def test_shuffling_changes_with_the_epoch_and_is_reproducible(tiny_mnist):
    loader = make(tiny_mnist).train_dataloader()
    first, again, second = epoch(loader, 0), epoch(loader, 0), epoch(loader, 1)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], second[0][0])


def test_continuous_pixels_are_bytes_over_255(tiny_mnist):
    dm = make(tiny_mnist)
    x, _, index = next(iter(dm.val_dataloader()))
    assert torch.equal(x.squeeze(1), dm.splits["val"][0][index].float() / 255)
    assert 0 < x.mean() < 1 and len(x.unique()) > 2


def test_dynamic_binarization_redraws_training_pixels_and_fixes_evaluation_pixels(tiny_mnist):
    dm = make(tiny_mnist, binarize="dynamic")
    loader = dm.train_dataloader()
    first, second = epoch(loader, 0), epoch(loader, 1)
    assert set(first[0][0].unique().tolist()) == {0.0, 1.0}
    # the same images drawn again in another epoch get different pixels
    by_code = {}
    for batches in (first, second):
        for x, _ in batches:
            for image in x:
                by_code.setdefault(tuple(image[0, 0, :16].tolist()), []).append(image)
    redrawn = [not torch.equal(a[0, 1:], b[0, 1:]) for a, b in (v for v in by_code.values() if len(v) == 2)]
    assert sum(redrawn) > 0.9 * len(redrawn)
    # ... with Bernoulli(x/255) marginals
    continuous = make(tiny_mnist).splits["train"][0].float() / 255
    drawn = torch.cat([x for x, _ in first])
    assert abs(drawn.mean() - continuous.mean()) < 0.01
    # validation and test images are binarized once, so evaluation repeats exactly
    assert torch.equal(next(iter(dm.val_dataloader()))[0], next(iter(dm.val_dataloader()))[0])
    assert set(dm.splits["test"][0].unique().tolist()) == {0, 255}


def test_static_binarization_is_one_fixed_sample_per_image(tiny_mnist):
    dm, again = make(tiny_mnist, binarize="static"), make(tiny_mnist, binarize="static")
    for name in ("train", "val", "test"):
        assert set(dm.splits[name][0].unique().tolist()) == {0, 255}
        assert torch.equal(dm.splits[name][0], again.splits[name][0])
    loader = dm.train_dataloader()
    first, second = epoch(loader, 0), epoch(loader, 1)
    assert sorted(first[0][0].flatten(1).sum(1).tolist()) != sorted(second[0][0].flatten(1).sum(1).tolist())
    assert torch.equal(torch.cat([x for x, _ in first]).sum(0), torch.cat([x for x, _ in second]).sum(0))


@pytest.mark.parametrize("world_size", [2, 3, 4])
@pytest.mark.parametrize("shuffle", [True, False])
def test_ddp_shards_are_disjoint_complete_and_equally_long(world_size, shuffle):
    num_items, batch_size = 103, 12
    ranks = [
        ShardedBatchSampler(num_items, batch_size, shuffle, seed=5, rank=r, world_size=world_size)
        for r in range(world_size)
    ]
    for sampler in ranks:
        sampler.set_epoch(3)
    shards = [list(sampler) for sampler in ranks]
    assert len({len(s) for s in shards}) == 1 == len({len(sampler) for sampler in ranks})
    seen = torch.cat([torch.cat(s) for s in shards]).tolist()
    assert sorted(seen) == list(range(num_items))  # disjoint and complete
    for step in range(len(shards[0])):  # each step's global batch is one slice of the epoch's order
        global_batch = torch.cat([s[step] for s in shards if step < len(s)])
        assert len(global_batch) == min(batch_size, num_items - step * batch_size)


def test_a_last_batch_smaller_than_the_world_is_dropped_in_training_only():
    train = [list(ShardedBatchSampler(25, 12, True, rank=r, world_size=2)) for r in range(2)]
    assert [len(s) for s in train] == [2, 2]  # 25 = 2 x 12 + 1: the single leftover would starve a rank
    evaluation = [list(ShardedBatchSampler(25, 12, False, rank=r, world_size=2)) for r in range(2)]
    assert sorted(torch.cat([torch.cat(s) for s in evaluation]).tolist()) == list(range(25))


def test_the_global_batch_size_must_divide_across_processes(tiny_mnist):
    dm = make(tiny_mnist, batch_size=22)
    trainer = Trainer(accelerator="cpu", strategy="ddp", devices=3, logger=False)  # not launched: world size 3
    dm.trainer = trainer
    with pytest.raises(ConfigError, match=r"data.batch_size=22 .* 3 processes .* multiple of 3, e.g. 21"):
        dm.train_dataloader()
    dm.batch_size = 24
    assert next(iter(dm.train_dataloader()))[0].shape[0] == 8  # 24 split across 3


@pytest.mark.parametrize(
    ("argument", "match"),
    [
        ("--data.batch_size=0", "data.batch_size"),
        ("--data.val_size=-5", "data.val_size"),
        ("--data.eval_batch_size=0", "data.eval_batch_size"),
        ("--data.binarize=sometimes", "data.binarize"),
        ("--data.predict_split=all", "data.predict_split"),
    ],
)
def test_bad_sizes_and_modes_are_refused_by_the_parser_naming_the_key(argument, match):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MNISTDataModule, "data")
    with pytest.raises(ArgumentError, match=f'key "{match}"'):
        parser.parse_args([argument])


def test_hyperparameters_from_the_parser_are_plain_values_a_checkpoint_can_hold(tiny_mnist, tmp_path):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(MNISTDataModule, "data")
    config = parser.parse_args([f"--data.data_dir={tiny_mnist[0]}", "--data.batch_size=20", "--data.val_size=50"])
    dm = MNISTDataModule(**config.data)
    assert type(config.data.batch_size) is not int  # jsonargparse's PositiveInt ...
    assert {type(dm.hparams[k]) for k in ("batch_size", "val_size", "eval_batch_size")} == {int}  # ... stored as int
    torch.save(dict(dm.hparams), tmp_path / "hparams.pt")
    assert torch.load(tmp_path / "hparams.pt", weights_only=True)["batch_size"] == 20


def test_predict_on_an_empty_validation_split_is_refused(tiny_mnist):
    with pytest.raises(ConfigError, match="data.predict_split: val holds no images with data.val_size: 0"):
        MNISTDataModule(data_dir=str(tiny_mnist[0]), val_size=0, predict_split="val")


def test_a_validation_split_as_large_as_the_training_set_is_refused(tiny_mnist):
    with pytest.raises(ConfigError, match="data.val_size=300 leaves no training images"):
        make(tiny_mnist, val_size=300)


def test_setup_refuses_unverified_files(tiny_mnist):
    data_dir, checksums = tiny_mnist
    labels = data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    dm = MNISTDataModule(data_dir=str(data_dir), checksums=checksums, download=False, val_size=50)
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte fails its SHA-256 check .* prepare_data"):
        dm.setup("fit")


def test_checksums_must_name_all_four_files(tiny_mnist):
    with pytest.raises(ConfigError, match="data.checksums lacks"):
        MNISTDataModule(data_dir=str(tiny_mnist[0]), checksums={"train-images-idx3-ubyte": "0" * 64})


@pytest.mark.slow
def test_the_real_set_loads_with_official_sizes_and_statistics(real_mnist):
    dm = MNISTDataModule(data_dir=str(real_mnist), download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert {n: len(y) for n, (_, y) in dm.splits.items()} == {"train": 55_000, "val": 5_000, "test": 10_000}
    pixels = torch.cat([dm.splits["train"][0], dm.splits["val"][0]]).float() / 255
    assert abs(pixels.mean().item() - 0.1307) < 5e-4 and abs(pixels.std().item() - 0.3081) < 5e-4
    assert torch.bincount(dm.splits["test"][1]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
