"""The experiment callbacks in real fits (CSV, TensorBoard, W&B offline), and the post-hoc command."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import matplotlib.image
import pytest
import torch
from builders import quiet_trainer, tiny_data, tiny_model
from conftest import CONFIGS, configs
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from vae_lightning.experiments import EXPERIMENTS, LatentManifold
from vae_lightning.experiments.callbacks import ExperimentData
from vae_lightning.experiments.command import main as experiments_main


def fit(tiny_mnist, logger, callbacks, epochs=1, latent_dim=2):
    m, dm = tiny_model(latent_dim), tiny_data(tiny_mnist)
    trainer = quiet_trainer(max_epochs=epochs, logger=logger, callbacks=callbacks)
    trainer.fit(m, datamodule=dm)
    return trainer, m, dm


def all_experiments(**kwargs):
    settings = {
        "latent_traversal": {"steps": 5},
        "prior_samples": {"num_samples": 50, "shown": 16},
        "interpolation": {"digits": (3, 8)},
    }
    return [cls(**settings.get(name, {}), **kwargs) for name, cls in EXPERIMENTS.items()]


def test_every_experiment_draws_a_png_of_its_figure_size_and_logs_its_measures(tiny_mnist, tmp_path):
    callbacks = all_experiments(every_n_epochs=2)
    trainer, m, dm = fit(tiny_mnist, CSVLogger(tmp_path), callbacks, epochs=2)
    data = ExperimentData.from_datamodule(dm)
    m.eval()
    for callback in callbacks:
        png = Path(trainer.log_dir) / "figures" / f"exp_{callback.name}-epoch001.png"
        assert callback.last_png == png and png.is_file(), callback.name
        assert not (png.parent / f"exp_{callback.name}-epoch000.png").exists()  # every_n_epochs=2
        outcome = callback.run(m, data)  # the same figure again (run is deterministic)
        width, height = (outcome.figure.get_size_inches() * outcome.figure.dpi).round().astype(int)
        assert matplotlib.image.imread(png).shape[:2] == (height, width), callback.name
    rows = list(csv.DictReader((Path(trainer.log_dir) / "metrics.csv").read_text().splitlines()))
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("exp/") and v}
    expected = {f"exp/{c.name}/{k}" for c in callbacks for k in c.run(m, data).measures}
    assert set(logged) == expected
    assert 0 <= logged["exp/latent_scatter/knn_accuracy"] <= 1
    assert logged["exp/latent_manifold/digits_present"] <= 10


def test_no_figure_is_left_open_and_pyplot_is_never_used(tiny_mnist, tmp_path):
    import matplotlib.pyplot as plt

    fit(tiny_mnist, CSVLogger(tmp_path), all_experiments())
    assert plt.get_fignums() == []
    # (pyplot itself is imported by torchmetrics, which Lightning imports; we never call it)
    package = Path(__file__).parents[1] / "vae_lightning"
    uses = re.compile(r"import\s+matplotlib\.pyplot|from\s+matplotlib\s+import\s+pyplot")
    assert not [p for p in package.rglob("*.py") if uses.search(p.read_text())]


def test_figures_reach_a_real_tensorboard_writer(tiny_mnist, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _, _ = fit(tiny_mnist, TensorBoardLogger(tmp_path), [LatentManifold(grid=5)])
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
        trainer, _, _ = fit(tiny_mnist, logger, [LatentManifold(grid=5)])
        run_id = logger.version
    finally:
        wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    images = list((run_dir / "files" / "media" / "images").rglob("*.png"))
    assert any("latent_manifold" in str(p) for p in images), images
    run_folder = Path(trainer.log_dir) / "vae-lightning-tests" / run_id  # the run's own folder (runs.run_dir)
    assert (run_folder / "figures" / "exp_latent_manifold-epoch000.png").is_file()


def test_an_experiment_that_does_not_fit_the_model_is_skipped(tiny_mnist, tmp_path):
    manifold = LatentManifold()
    trainer, m, _ = fit(tiny_mnist, CSVLogger(tmp_path), [manifold], latent_dim=1)
    assert "dims (0, 1)" in manifold.skip_reason(m)
    assert manifold.last_png is None and not (Path(trainer.log_dir) / "figures").exists()


def checkpoint_of_a_short_fit(run_cli, tiny_config, tmp_path, variant="two_latent") -> Path:
    run_cli("fit", *configs(CONFIGS / f"{variant}.yaml", tiny_config), "--trainer.max_epochs", "1")
    return tmp_path / "logs" / variant / "version_0" / "checkpoints" / "last.ckpt"


def test_the_command_renders_and_measures_a_checkpoint(run_cli, tiny_config, tmp_path, capsys):
    checkpoint = checkpoint_of_a_short_fit(run_cli, tiny_config, tmp_path)
    out = tmp_path / "experiments"
    record = experiments_main(
        [
            "--ckpt_path",
            str(checkpoint),
            "--output_dir",
            str(out),
            "--latent_traversal.steps",
            "5",
            "--interpolation.digits",
            "[3, 8]",
        ]
    )
    assert sorted(p.name for p in out.glob("*.png")) == sorted(f"{name}.png" for name in EXPERIMENTS)
    written = json.loads((out / "measures.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert written["model"]["latent_dim"] == 2 and written["data"] == {"binarize": "none", "test_images": 100}
    assert set(written["experiments"]) == set(EXPERIMENTS) and written["skipped"] == {}
    assert "spread" in written["definitions"]["epsilon_sweep"]
    assert written["classifier"]["clear_threshold"] == 0.8
    assert matplotlib.image.imread(out / "latent_traversal.png").shape[1] > 200

    with pytest.raises(SystemExit) as refused:  # an earlier result is never overwritten silently
        experiments_main(["--ckpt_path", str(checkpoint), "--output_dir", str(out)])
    assert refused.value.code == 2 and "pass --overwrite true" in capsys.readouterr().err
    experiments_main(
        [
            "--ckpt_path",
            str(checkpoint),
            "--output_dir",
            str(out),
            "--overwrite",
            "true",
            "--experiments",
            "[prior_samples]",
        ]
    )
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
    assert refused.value.code == 2 and str(checkpoint) in err
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
        names = yaml.safe_load(capsys.readouterr().out)["experiments"]["names"]
        assert {EXPERIMENTS[n].__name__ for n in names} >= needed, variant


def test_experiments_leave_training_bit_identical(tiny_mnist, tmp_path):
    """The callbacks (and training the digit classifier) must not touch the training's random streams."""
    from lightning.pytorch import seed_everything

    from vae_lightning.experiments.callbacks import digit_classifier

    weights = []
    for callbacks in ([], all_experiments(), all_experiments()):  # the classifier trained, then from its cache
        digit_classifier.cache_clear()
        seed_everything(3)
        trainer, m, _ = fit(tiny_mnist, CSVLogger(tmp_path), callbacks, epochs=2)
        weights.append(m.state_dict())
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])


def test_the_experiments_group_runs_them_on_one_copy_of_the_data_and_measures_as_each_alone(tiny_mnist, tmp_path):
    from vae_lightning.experiments import Experiments

    names, options = ["latent_scatter", "prior_samples"], {"prior_samples": {"num_samples": 50, "shown": 16}}
    group = Experiments(names, every_n_epochs=1, options=options)
    trainer, _, _ = fit(tiny_mnist, CSVLogger(tmp_path / "group"), [group])
    reference, _, _ = fit(
        tiny_mnist, CSVLogger(tmp_path / "alone"), [EXPERIMENTS[n](**options.get(n, {})) for n in names]
    )
    ours, theirs = (
        {k: float(v) for k, v in t.callback_metrics.items() if k.startswith("exp/")} for t in (trainer, reference)
    )
    assert ours == theirs and len(ours) == 10  # 9 of latent_scatter, 1 of prior_samples
    assert [e.last_png.name for e in group.experiments] == [f"exp_{n}-epoch000.png" for n in names]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"names": ["latent_scater"]}, "experiments.names must be 'reconstructions', "),
        (
            {"names": ["interpolation"], "options": {"interpolation": {"digit": [3, 8]}}},
            "experiments.options.interpolation",
        ),
        ({"every_n_epochs": 0}, "experiments.every_n_epochs must be a positive integer"),
    ],
)
def test_the_experiments_group_refuses_bad_settings_by_name(kwargs, match):
    from vae_lightning.errors import ConfigError
    from vae_lightning.experiments import Experiments

    with pytest.raises(ConfigError, match=match):
        Experiments(**kwargs)
