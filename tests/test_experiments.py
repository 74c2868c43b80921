"""The experiments through their one scheduler in real fits (CSV, TensorBoard, W&B offline, DDP), their settings
checked where declared, a new experiment added through the registry, and the post-hoc command."""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import pytest
import torch
from builders import quiet_trainer, tiny_data, tiny_model
from conftest import CONFIGS, configs
from jsonargparse import ArgumentError, ArgumentParser
from jsonargparse.typing import OpenUnitInterval, PositiveInt
from lightning.pytorch import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from vae_lightning import MLPEncoder
from vae_lightning.errors import ConfigError
from vae_lightning.experiments import EXPERIMENTS, Experiments, compute, digit_classifier
from vae_lightning.experiments.base import Experiment, ExperimentData, Outcome
from vae_lightning.experiments.command import main as experiments_main
from vae_lightning.experiments.command import parser as command_parser
from vae_lightning.experiments.epsilon_sweep import EpsilonSweep
from vae_lightning.experiments.figures import image_rows
from vae_lightning.experiments.interpolation import Interpolation
from vae_lightning.experiments.latent_traversal import LatentTraversal
from vae_lightning.experiments.reconstructions import Reconstructions

SMALL = {  # the seven on the tiny set in a few seconds
    "latent_traversal": {"steps": 5},
    "prior_samples": {"num_samples": 50, "shown": 16},
    "interpolation": {"digits": [3, 8]},
}


def fit(tiny_mnist, logger, callbacks, epochs=1, latent_dim=2, **kwargs):
    m, dm = tiny_model(latent_dim, encoder=kwargs.pop("encoder", None)), tiny_data(tiny_mnist, **kwargs.pop("data", {}))
    trainer = quiet_trainer(max_epochs=epochs, logger=logger, callbacks=callbacks, **kwargs)
    trainer.fit(m, datamodule=dm)
    return trainer, m, dm


def logged(folder: Path) -> dict[str, float]:
    """The `exp/` numbers in the metrics.csv under `folder`."""
    (metrics,) = folder.rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.read_text().splitlines()))
    return {k: float(v) for row in rows for k, v in row.items() if k.startswith("exp/") and v}


def test_every_experiment_draws_its_figure_as_png_and_logs_the_numbers_it_measures(tiny_mnist, tmp_path):
    group = Experiments(list(EXPERIMENTS), every_n_epochs=2, options=SMALL)
    trainer, m, dm = fit(tiny_mnist, CSVLogger(tmp_path), [group], epochs=2)
    figures = Path(trainer.log_dir) / "figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(f"exp_{n}-epoch001.png" for n in EXPERIMENTS)
    numbers = logged(tmp_path)
    data = ExperimentData.from_datamodule(dm)  # a fresh copy, each experiment alone: the same numbers
    m.eval()
    for experiment in group.experiments:
        outcome = experiment.run(m, data)
        width, height = (outcome.figure.get_size_inches() * outcome.figure.dpi).round().astype(int)
        png = matplotlib.image.imread(figures / f"exp_{experiment.name}-epoch001.png")
        assert png.shape[:2] == (height, width), experiment.name
        for key, value in outcome.measures.items():
            assert numbers.pop(f"exp/{experiment.name}/{key}") == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert numbers == {}  # nothing logged that the experiments do not measure
    assert len(group.experiments) == len(EXPERIMENTS)


def test_no_figure_is_left_open_and_pyplot_is_never_used(tiny_mnist, tmp_path):
    import matplotlib.pyplot as plt

    fit(tiny_mnist, CSVLogger(tmp_path), [Experiments(list(EXPERIMENTS), 1, SMALL)])
    assert plt.get_fignums() == []
    # (pyplot itself is imported by torchmetrics, which Lightning imports; we never call it)
    package = Path(__file__).parents[1] / "vae_lightning"
    uses = re.compile(r"import\s+matplotlib\.pyplot|from\s+matplotlib\s+import\s+pyplot")
    assert not [p for p in package.rglob("*.py") if uses.search(p.read_text())]


def manifold_only() -> Experiments:
    return Experiments(["latent_manifold"], every_n_epochs=1, options={"latent_manifold": {"grid": 5}})


def test_figures_reach_a_real_tensorboard_writer(tiny_mnist, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _, _ = fit(tiny_mnist, TensorBoardLogger(tmp_path), [manifold_only()])
    trainer.logger.experiment.flush()
    events = EventAccumulator(trainer.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert "exp/latent_manifold" in events.Tags()["images"]
    (image,) = events.Images("exp/latent_manifold")
    assert image.width > 100 and image.height > 100
    assert (Path(trainer.log_dir) / "figures" / "exp_latent_manifold-epoch000.png").is_file()  # PNG too


def test_figures_reach_a_real_wandb_offline_run(tiny_mnist, tmp_path, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="vae-lightning-tests", save_dir=str(tmp_path), offline=True)
    try:
        trainer, _, _ = fit(tiny_mnist, logger, [manifold_only()])
        run_id = logger.version
    finally:
        wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert any("latent_manifold" in str(p) for p in images), images
    run_folder = Path(trainer.log_dir) / "vae-lightning-tests" / run_id  # the run's own folder (runs.run_dir)
    assert (run_folder / "figures" / "exp_latent_manifold-epoch000.png").is_file()


def test_an_experiment_that_does_not_fit_the_model_is_skipped_saying_why(tiny_mnist, tmp_path, caplog):
    package = logging.getLogger("vae_lightning")  # its console lines, which do not propagate to pytest's
    package.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="vae_lightning")
    try:
        group = Experiments(["latent_manifold", "prior_samples"], 1, SMALL)
        trainer, _, _ = fit(tiny_mnist, CSVLogger(tmp_path), [group], latent_dim=1)
    finally:
        package.removeHandler(caplog.handler)
    reason = "dims (0, 1) are not two distinct dimensions of a 1-latent model"
    assert f"Experiment latent_manifold skipped: {reason}; its numbers are not reported." in caplog.text
    assert [p.name for p in (Path(trainer.log_dir) / "figures").iterdir()] == ["exp_prior_samples-epoch000.png"]
    assert set(logged(tmp_path)) == {"exp/prior_samples/unclear"}


class SizeNotingEncoder(MLPEncoder):
    """The MLP encoder, noting the size of each batch it encodes in `<folder>/<process id>.txt`."""

    def __init__(self, latent_dim: int, folder: Path) -> None:
        super().__init__(latent_dim, [64])
        self.folder = folder

    def forward(self, x):
        with open(self.folder / f"{os.getpid()}.txt", "a") as notes:
            notes.write(f"{len(x)}\n")
        return super().forward(x)


def batch_sizes(folder: Path) -> dict[int, list[int]]:
    """The sizes each process's `SizeNotingEncoder` encoded, by process id."""
    return {int(p.stem): [int(n) for n in p.read_text().split()] for p in folder.glob("*.txt")}


def test_the_posterior_is_encoded_once_for_every_experiment_that_reads_it(tiny_mnist, tmp_path):
    group = Experiments(["latent_scatter", "epsilon_sweep"], every_n_epochs=1)
    (tmp_path / "sizes").mkdir()
    fit(tiny_mnist, CSVLogger(tmp_path), [group], epochs=2, encoder=SizeNotingEncoder(2, tmp_path / "sizes"))
    (sizes,) = batch_sizes(tmp_path / "sizes").values()
    assert sizes.count(100) == 2  # the 100 test images, once in each of the two epochs (other batches: 25, 50, 1)


class ClassifierSeen(Callback):
    """Whether the digit classifier was cached when the first training batch started."""

    def __init__(self, root: Path) -> None:
        self.root, self.cached = root, None

    def on_train_batch_start(self, *args) -> None:
        if self.cached is None:
            self.cached = bool(list(self.root.rglob("digits-*.pt")))


def test_the_classifier_is_trained_at_train_start_only_when_an_experiment_will_run(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    for group, latent_dim in [
        (Experiments(["prior_samples"], every_n_epochs=2, options=SMALL), 2),  # not due in a 1-epoch fit
        (Experiments(["latent_manifold"], every_n_epochs=1), 1),  # due, but does not fit the model
    ]:
        seen = ClassifierSeen(tmp_path)
        fit(tiny_mnist, CSVLogger(tmp_path / "logs"), [group, seen], latent_dim=latent_dim)
        assert seen.cached is False and not list(tmp_path.rglob("digits-*.pt"))
    seen = ClassifierSeen(tmp_path)
    fit(tiny_mnist, CSVLogger(tmp_path / "logs"), [Experiments(["prior_samples"], 1, SMALL), seen])
    assert seen.cached is True  # before the first epoch, not in the middle of training


def test_experiments_leave_training_bit_identical(tiny_mnist, tmp_path):
    """The experiments (and training the digit classifier) must not touch the training's random streams."""
    from lightning.pytorch import seed_everything

    weights = []
    for callbacks in ([], [Experiments(list(EXPERIMENTS), 1, SMALL)], [Experiments(list(EXPERIMENTS), 1, SMALL)]):
        digit_classifier.cache_clear()  # the classifier trained, then loaded from its cache
        seed_everything(3)
        _, m, _ = fit(tiny_mnist, CSVLogger(tmp_path), callbacks, epochs=2)
        weights.append(m.state_dict())
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])


@pytest.mark.slow
def test_two_processes_gather_the_posterior_and_measure_as_one(tiny_mnist, tmp_path):
    """DDP (spawned, on CPU): each process encodes its half of the test set; rank 0's numbers are one process's."""
    group = Experiments(["latent_scatter", "epsilon_sweep"], every_n_epochs=1)
    (tmp_path / "sizes").mkdir()
    encoder = SizeNotingEncoder(2, tmp_path / "sizes")
    ddp = {"strategy": "ddp_spawn", "devices": 2, "data": {"batch_size": 50}}
    _, m, dm = fit(tiny_mnist, CSVLogger(tmp_path), [group], encoder=encoder, **ddp)
    spawned = [sizes for pid, sizes in batch_sizes(tmp_path / "sizes").items() if pid != os.getpid()]
    assert len(spawned) == 2 and all(sizes.count(50) == 1 and 100 not in sizes for sizes in spawned)
    dm.setup("fit")  # the spawned processes set up their own copies
    data, numbers = ExperimentData.from_datamodule(dm), logged(tmp_path)
    m.eval()
    for experiment in group.experiments:
        for key, value in experiment.run(m, data).measures.items():
            assert numbers.pop(f"exp/{experiment.name}/{key}") == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert numbers == {}


@dataclass
class MeanPixel(Experiment):
    """A new experiment, as a user writes one: reconstructions of the first test images, and the share of
    them brighter than `threshold`.

    Args:
        threshold: mean pixel value above which a reconstruction counts as bright.
        shown: test images reconstructed.
    """

    name = "mean_pixel"
    threshold: OpenUnitInterval = 0.5
    shown: PositiveInt = 4

    def run(self, model, data: ExperimentData) -> Outcome:
        pixels = compute.reconstruct(model, data.images[: self.shown])
        bright = (pixels.mean((1, 2, 3)) > self.threshold).float().mean().item()
        return Outcome(image_rows(pixels.unsqueeze(0), "reconstructions"), {"bright": bright})


def test_a_new_experiment_is_its_class_and_one_registry_entry(tiny_mnist, tmp_path, monkeypatch):
    monkeypatch.setitem(EXPERIMENTS, "mean_pixel", MeanPixel)
    group = Experiments(["mean_pixel"], every_n_epochs=1, options={"mean_pixel": {"threshold": 0.01}})
    trainer, _, _ = fit(tiny_mnist, CSVLogger(tmp_path), [group])
    assert (Path(trainer.log_dir) / "figures" / "exp_mean_pixel-epoch000.png").is_file()
    assert logged(tmp_path) == {"exp/mean_pixel/bright": 1.0}  # every reconstruction is brighter than 0.01
    with pytest.raises(ConfigError, match=r"experiments\.options\.mean_pixel\.threshold: 2 is not of type OpenUnit"):
        Experiments(["mean_pixel"], options={"mean_pixel": {"threshold": 2}})
    command = command_parser()  # and the post-hoc command takes its settings as flags
    assert (
        command.parse_args(
            ["--ckpt_path", "c", "--output_dir", "o", "--mean_pixel.threshold", "0.2"]
        ).mean_pixel.threshold
        == 0.2
    )
    assert "Unvalidated" not in command.format_help()  # every setting's type resolved, this one's and ours


# (an experiment's options, what the refusal says); the names, experiments.options and the type of a setting
# are refused naming the setting, rules across settings by the experiment itself
BAD_OPTIONS = [
    ({"interpolation": {"digit": [3, 8]}}, "options.interpolation.digit: interpolation has no such setting; its "
     "settings: digits, steps, seed"),
    ({"latent_scatter": {"grid": 0}}, "options.latent_scatter.grid: 0 is not of type PositiveInt"),
    ({"latent_scatter": {"max_points": 1}}, "options.latent_scatter.max_points: 1 is not of type AtLeastTwo | None"),
    ({"interpolation": {"digits": [3, 12]}}, "options.interpolation.digits: [3, 12] is not of type tuple[Literal[0, 1"),
    ({"latent_manifold": {"high": 1.0}}, "options.latent_manifold.high: 1.0 is not of type OpenUnitInterval; see the "
     "LatentManifold docstring"),
    ({"interpolation": {"digits": [3, 3]}}, "interpolation.digits must be two different digits, got [3, 3]"),
    ({"prior_samples": {"num_samples": 10}}, "prior_samples.shown (100) is above num_samples (10): lower shown or "
     "raise num_samples."),
    ({"latent_manifold": {"low": 0.9, "high": 0.1}}, "latent_manifold.low (0.9) must be below high (0.1)"),
    ({"epsilon_sweep": {"eps_start": 0.5, "eps_stop": 0.1}}, "epsilon_sweep.eps_start (0.5) is above eps_stop (0.1): "
     "lower eps_start or raise eps_stop."),
]  # fmt: skip


@pytest.mark.parametrize(("options", "match"), BAD_OPTIONS, ids=[m[:40] for _, m in BAD_OPTIONS])
def test_bad_options_are_refused_by_name(options, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        Experiments(list(options), options=options)


def test_unknown_names_are_refused_with_the_choices():
    choices = "choose from reconstructions, epsilon_sweep, latent_traversal, interpolation, latent_manifold"
    with pytest.raises(ConfigError, match=f"experiments.names: 'latent_scater' is not an experiment; {choices}"):
        Experiments(["latent_scater"])
    with pytest.raises(ConfigError, match="experiments.options: 'latent_scater' is not an experiment"):
        Experiments(["latent_scatter"], options={"latent_scater": {"grid": 5}})


def test_the_group_s_own_settings_are_checked_as_declared():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(Experiments)
    assert parser.parse_object({"every_n_epochs": 3}).every_n_epochs == 3
    with pytest.raises(ArgumentError, match="every_n_epochs"):
        parser.parse_object({"every_n_epochs": 0})
    accepted = Experiments(["interpolation"], options={"interpolation": {"digits": [3, 8], "steps": 2}})
    assert accepted.experiments == [Interpolation(digits=(3, 8), steps=2)]


@pytest.mark.parametrize(
    ("experiment", "match"),
    [
        (Reconstructions(indices=[3, 90]), "reconstructions.indices=90 is outside the test set (0..89)"),
        (EpsilonSweep(image_index=100), "epsilon_sweep.image_index=100 is outside the test set (0..89)"),
        (LatentTraversal(image_index=-1), "latent_traversal.image_index=-1 is outside the test set (0..89)"),
        (Interpolation(digits=(3, 7)), "interpolation.digits: the test set has no image of a 7; choose another"),
    ],
)
def test_a_test_image_that_is_not_there_is_refused_naming_the_field(tiny_mnist, experiment, match):
    dm = tiny_data(tiny_mnist)
    dm.setup("test")
    images, labels = dm.splits["test"]
    data = ExperimentData(images[labels != 7].float().div(255).unsqueeze(1), labels[labels != 7], "unused")  # no 7
    with pytest.raises(ConfigError, match=re.escape(match)):
        experiment.run(tiny_model(2).eval(), data)


def checkpoint_of_a_short_fit(run_cli, tiny_config, tmp_path, *args, variant="two_latent") -> Path:
    run_cli("fit", *configs(CONFIGS / f"{variant}.yaml", tiny_config), "--trainer.max_epochs", "1", *args)
    return tmp_path / "logs" / variant / "version_0" / "checkpoints" / "last.ckpt"


def test_the_command_renders_and_measures_a_checkpoint_as_training_did(run_cli, tiny_config, tmp_path, capsys):
    options = ("--experiments.every_n_epochs", "1", "--experiments.options", json.dumps(SMALL))
    checkpoint = checkpoint_of_a_short_fit(run_cli, tiny_config, tmp_path, *options)
    out = tmp_path / "experiments"
    flags = ["--latent_traversal.steps", "5", "--interpolation.digits", "[3, 8]", "--prior_samples.num_samples", "50"]
    record = experiments_main(
        ["--ckpt_path", str(checkpoint), "--output_dir", str(out), *flags, "--prior_samples.shown", "16"]
    )
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{name}.png" for name in EXPERIMENTS)
    written = json.loads((out / "measures.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert written["model"]["latent_dim"] == 2 and written["data"] == {"binarize": "none", "test_images": 100}
    assert list(written["experiments"]) == list(EXPERIMENTS) and written["skipped"] == {}
    assert (
        "spread" in written["definitions"]["epsilon_sweep"] and "Args:" not in written["definitions"]["epsilon_sweep"]
    )
    assert written["classifier"]["clear_threshold"] == 0.8
    assert written["checkpoint"] == str(checkpoint.resolve()) and len(written["checkpoint_sha256"]) == 64
    assert matplotlib.image.imread(out / "latent_traversal.png").shape[1] > 200
    numbers = logged(tmp_path / "logs")  # the fit's numbers at the epoch the checkpoint holds
    for name, measures in written["experiments"].items():
        for key, value in measures.items():
            assert numbers.pop(f"exp/{name}/{key}") == pytest.approx(value, rel=1e-6, abs=1e-7), (name, key)
    assert numbers == {}

    with pytest.raises(SystemExit) as refused:  # an earlier result is never overwritten silently
        experiments_main(["--ckpt_path", str(checkpoint), "--output_dir", str(out)])
    assert refused.value.code == 2 and "pass --overwrite true" in capsys.readouterr().err
    again = ["--ckpt_path", str(checkpoint), "--output_dir", str(out), "--overwrite", "true"]
    experiments_main([*again, "--experiments", "[prior_samples]"])
    assert set(json.loads((out / "measures.json").read_text())["experiments"]) == {"prior_samples"}


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_the_command_refuses_a_bad_checkpoint(run_cli, tiny_config, tmp_path, capsys, damage):
    checkpoint = checkpoint_of_a_short_fit(run_cli, tiny_config, tmp_path)
    if damage == "missing":
        checkpoint = checkpoint.with_name("nope.ckpt")
    else:
        checkpoint.write_bytes(checkpoint.read_bytes()[:5000])
    with pytest.raises(SystemExit) as refused:
        experiments_main(["--ckpt_path", str(checkpoint), "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and str(checkpoint) in err and err.startswith("vae-lightning-experiments: error:")
    assert ("is not a file" if damage == "missing" else "is truncated or corrupted") in err
    assert not (tmp_path / "out").exists()


def test_the_configs_switch_on_the_experiments_that_fit_them(run_cli, capsys):
    import yaml

    expected = {
        "vanilla": {"EpsilonSweep", "LatentTraversal", "Interpolation", "LatentScatter", "PriorSamples"},
        "two_latent": {"EpsilonSweep", "LatentManifold", "LatentScatter", "Interpolation", "PriorSamples"},
        "no_kld": {"EpsilonSweep", "LatentScatter"},
        "no_recon": {"LatentScatter"},
        "cnn": {"EpsilonSweep", "LatentScatter", "PriorSamples"},
    }
    for variant, needed in expected.items():
        with pytest.raises(SystemExit):
            run_cli("fit", "--config", CONFIGS / f"{variant}.yaml", "--print_config")
        group = yaml.safe_load(capsys.readouterr().out)["experiments"]
        names = group.get("init_args", group)["names"]  # a class_path piece, or its settings alone
        assert {EXPERIMENTS[n].__name__ for n in names} >= needed, variant
