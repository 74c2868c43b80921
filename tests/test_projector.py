"""The latents in the loggers' projectors, for real: what `vae-lightning predict` and `LatentScatter(projector=true)`
leave in a TensorBoard log folder (the projector config, the points, the metadata, the sprite), loaded back the way
TensorBoard's Projector reads them, and the table a W&B offline run holds, with its images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy
import pytest
import torch
import yaml
from conftest import CONFIGS, configs
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from wandb_runs import WANDB, finished_records

TENSORBOARD = ["--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"]


def fit_checkpoint(run_cli, tiny_config, tmp_path):
    run_cli("fit", *configs(CONFIGS / "vanilla.yaml", tiny_config), "--trainer.max_epochs", "1")
    return tmp_path / "logs" / "vanilla" / "version_0" / "checkpoints" / "last.ckpt"


def read_projector(folder):
    """The embeddings of a TensorBoard log folder as its Projector reads them: the config, then per embedding
    the points (TSV), the metadata rows with their header, and the sprite image."""
    config = text_format.Parse((folder / "projector_config.pbtxt").read_text(), ProjectorConfig())
    found = {}
    for embedding in config.embeddings:
        points = numpy.loadtxt(folder / embedding.tensor_path, delimiter="\t", ndmin=2, dtype=numpy.float32)
        header, *rows = (folder / embedding.metadata_path).read_text().splitlines()
        sprite = numpy.asarray(Image.open(folder / embedding.sprite.image_path).convert("L"))
        found[embedding.tensor_name] = (embedding, points, header.split("\t"), [r.split("\t") for r in rows], sprite)
    return found


def test_predict_sends_the_latents_digits_and_images_to_tensorboard_s_projector(run_cli, tiny_config, tmp_path):
    checkpoint = fit_checkpoint(run_cli, tiny_config, tmp_path)
    board = tmp_path / "board"
    predict = run_cli(
        "predict",
        *configs(CONFIGS / "vanilla.yaml", tiny_config),
        *TENSORBOARD,
        "--trainer.logger.init_args.save_dir",
        board,
        "--ckpt_path",
        checkpoint,
        "--predictions.projector_points",
        "60",
    )
    writer = next(c for c in predict.trainer.callbacks if type(c).__name__ == "LatentWriter")
    latents = torch.load(writer.last_path, weights_only=True)  # all 100 test images
    (folder,) = {p.parent for p in board.rglob("projector_config.pbtxt")}
    ((name, (embedding, points, header, rows, sprite)),) = read_projector(folder).items()

    assert name.startswith("latents/test")
    numpy.testing.assert_array_equal(points, latents["mu"][:60].numpy())  # the first 60, in all 20 dimensions
    assert header == ["digit", "index"]
    assert rows == [[str(int(d)), str(i)] for i, d in enumerate(latents["label"][:60])]
    assert list(embedding.sprite.single_image_dim) == [28, 28]
    side = math.ceil(math.sqrt(60))  # TensorBoard's sprite: a square of tiles in row order
    assert sprite.shape == (side * 28, side * 28)
    images = predict.datamodule.splits["test"][0]  # uint8, as served (no binarisation in this config)
    for i in (0, 13, 59):
        row, col = divmod(i, side)
        tile = sprite[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28].astype(int)
        assert numpy.abs(tile - images[i].numpy().astype(int)).max() <= 1, i


def test_projector_points_0_sends_nothing_and_a_negative_count_is_refused(run_cli, tiny_config, tmp_path, capsys):
    checkpoint = fit_checkpoint(run_cli, tiny_config, tmp_path)
    board = tmp_path / "board"
    args = [*configs(CONFIGS / "vanilla.yaml", tiny_config), *TENSORBOARD, "--trainer.logger.init_args.save_dir"]
    run_cli("predict", *args, board, "--ckpt_path", checkpoint, "--predictions.projector_points", "0")
    assert not list(board.rglob("projector_config.pbtxt"))
    with pytest.raises(SystemExit) as done:
        run_cli("predict", *args, board, "--ckpt_path", checkpoint, "--predictions.projector_points", "-1")
    assert done.value.code == 2
    assert "projector_points" in capsys.readouterr().err


def scatter_piece(tmp_path, save_dir):
    piece = tmp_path / "scatter.yaml"
    scatter = {"projector": True, "max_points": 40, "grid": 4}
    piece.write_text(
        yaml.safe_dump(
            {
                "trainer": {"logger": {"init_args": {"save_dir": str(save_dir)}}},
                "experiments": {
                    "names": ["latent_scatter"],
                    "every_n_epochs": 1,
                    "options": {"latent_scatter": scatter},
                },
            }
        )
    )
    return piece


def test_latent_scatter_sends_its_points_at_each_of_its_epochs(run_cli, tiny_config, tmp_path):
    board = tmp_path / "board"
    piece = scatter_piece(tmp_path, board)
    fit = run_cli(
        "fit", *configs(CONFIGS / "two_latent.yaml", tiny_config), *TENSORBOARD, "--config", piece,
        "--trainer.max_epochs", "2",
    )  # fmt: skip
    (folder,) = {p.parent for p in board.rglob("projector_config.pbtxt")}
    found = read_projector(folder)
    assert sorted(name.split(":")[0] for name in found) == ["exp/latent_scatter"] * 2  # one per epoch
    model = fit.model.eval()
    images = fit.datamodule.splits["test"][0][:40].float().div(255).unsqueeze(1)
    expected = model.encode(images)[0].detach().numpy()
    last = max(found.values(), key=lambda item: item[0].tensor_path)  # the final epoch's (highest step)
    numpy.testing.assert_allclose(last[1], expected, atol=1e-5)


def test_an_offline_w_and_b_run_holds_the_latents_table_with_its_images(run_cli, tiny_config, tmp_path, offline):
    import wandb

    checkpoint = fit_checkpoint(run_cli, tiny_config, tmp_path)
    try:
        predict = run_cli(
            "predict",
            *configs(CONFIGS / "vanilla.yaml", tiny_config, WANDB),
            "--trainer.logger.init_args.save_dir",
            tmp_path / "wb",
            "--ckpt_path",
            checkpoint,
            "--predictions.projector_points",
            "30",
        )
    finally:
        wandb.finish()
    writer = next(c for c in predict.trainer.callbacks if type(c).__name__ == "LatentWriter")
    latents = torch.load(writer.last_path, weights_only=True)
    (run,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    records = finished_records(next(run.glob("run-*.wandb")))
    logged = {i.nested_key[0] for r in records if r.HasField("history") for i in r.history.item if i.nested_key}
    assert "latents/test" in logged
    # the table and its images travel as the run's table artifact (what `wandb sync` uploads): its files
    (artifact,) = [r.artifact for r in records if r.HasField("artifact") and r.artifact.type == "run_table"]
    files = {entry.path: Path(entry.local_path) for entry in artifact.manifest.contents}
    table = json.loads(files["latents/test.table.json"].read_text())
    assert table["columns"] == ["index", "digit", "image", *(f"z{d}" for d in range(20))]
    assert len(table["data"]) == 30
    for i, row in enumerate(table["data"]):
        assert row[:2] == [i, int(latents["label"][i])]
        numpy.testing.assert_allclose(row[3:], latents["mu"][i].numpy(), rtol=1e-6)
        assert row[2]["_type"] == "image-file"
        image = numpy.asarray(Image.open(files[row[2]["path"]]).convert("L")).astype(int)
        expected = predict.datamodule.splits["test"][0][i].numpy().astype(int)
        assert numpy.abs(image - expected).max() <= 1, i
