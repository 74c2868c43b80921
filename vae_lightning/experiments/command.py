"""`vae-lightning-experiments`: render and measure every experiment that fits a checkpoint, without training.

Writes `<output_dir>/<experiment>.png` and `<output_dir>/measures.json`: each number, its definition, the checkpoint
(path, SHA-256), model, data mode and classifier's scores. Each experiment's settings: `--<experiment>.<setting>`."""

import inspect
import json
import logging
from pathlib import Path

import torch
from jsonargparse import ArgumentParser

from vae_lightning.checks import check_checkpoint_file
from vae_lightning.data import MNISTDataModule
from vae_lightning.errors import ConfigError, attributed, run_command
from vae_lightning.experiments.base import Experiment, ExperimentData
from vae_lightning.experiments.classifier import CLEAR_THRESHOLD, digit_classifier
from vae_lightning.experiments.figures import write_png
from vae_lightning.experiments.registry import EXPERIMENTS
from vae_lightning.experiments.schedule import fitting
from vae_lightning.module import VAELitModule
from vae_lightning.runs import atomic_path, provenance, refuse_earlier_outputs

log = logging.getLogger(__name__)


def load_checkpoint(path: str, device: str, data_dir: str | None, **data) -> tuple[VAELitModule, dict, MNISTDataModule]:
    """A checkpoint's model on `device`, the checkpoint, and its data module set up, data_dir and data overriding."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no usable CUDA GPU; use --device cpu (or auto).")
    path = check_checkpoint_file(path)  # missing, truncated, corrupted or code-carrying: refused by name
    with attributed(f"--ckpt_path {str(path)!r}", "point it at a checkpoint written by `vae-lightning fit`"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        model = VAELitModule.load_from_checkpoint(path, map_location=device, weights_only=True)
    settings = {k: v for k, v in checkpoint.get("datamodule_hyper_parameters", {}).items() if not k.startswith("_")}
    settings.update(data, **({} if data_dir is None else {"data_dir": data_dir}))
    with attributed("the checkpoint's data settings (datamodule_hyper_parameters)"):
        datamodule = MNISTDataModule(**settings)
    datamodule.prepare_data()
    datamodule.setup()
    return model.eval(), checkpoint, datamodule


def run_experiments(
    ckpt_path: str,
    output_dir: str,
    data_dir: str | None = None,
    download: bool = True,
    experiments: list[str] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    **settings: Experiment,
) -> dict:
    """Render and measure the experiments that fit the checkpoint's model; return what measures.json holds.

    Args:
        ckpt_path: a checkpoint written by `vae-lightning fit`.
        output_dir: folder for the PNG files and measures.json.
        data_dir: MNIST folder (default: the one the data module would use).
        download: fetch MNIST if missing.
        experiments: names to run (default: every one that fits the model; `[]`: none, as in a fit).
        device: `auto`, `cpu` or `cuda`.
        overwrite: replace an earlier measures.json and figures in output_dir.
        settings: configured experiments by name (others: each with its defaults).
    """
    if experiments == []:  # as `experiments.names: []` in a fit: none
        raise ConfigError(
            "--experiments []: names no experiment, so there is nothing to run; name some, or leave the flag out "
            "for every one."
        )
    names = experiments or list(EXPERIMENTS)
    if unknown := sorted(set(names) - set(EXPERIMENTS)):
        raise ConfigError(f"--experiments {unknown} unknown: choose from {list(EXPERIMENTS)}.")
    out = Path(output_dir)
    outputs = [("--output_dir", out, name) for name in ("measures.json", *(f"{n}.png" for n in names))]
    refuse_earlier_outputs(outputs, overwrite)  # before any work: writable, and nothing of another run replaced
    model, checkpoint, datamodule = load_checkpoint(ckpt_path, device, data_dir, download=download)
    data = ExperimentData.from_datamodule(datamodule)
    due, skipped = fitting([settings.get(name) or EXPERIMENTS[name]() for name in names], model, say=True)
    results = {}
    for experiment in due:
        outcome = experiment.run(model, data)
        write_png(outcome.figure, out / f"{experiment.name}.png")
        results[experiment.name] = outcome.measures
        log.info("%s: %s", experiment.name, ", ".join(f"{k} {v:.4g}" for k, v in outcome.measures.items()))
    record = {
        **provenance(ckpt_path),
        "model": {
            "latent_dim": model.latent_dim,
            **{part: type(getattr(model, part)).__name__ for part in ("encoder", "decoder")},
            **{key: model.hparams.get(key) for key in ("recon_weight", "kl_weight")},
            **{key: checkpoint.get(key) for key in ("epoch", "global_step")},
        },
        "data": {"binarize": datamodule.binarize, "test_images": len(data.images)},
        "classifier": {**digit_classifier(data.data_dir)[1], "clear_threshold": CLEAR_THRESHOLD},
        "experiments": results,
        "skipped": skipped,
        "definitions": {e.name: inspect.cleandoc(type(e).__doc__ or "").split("\n\nArgs:")[0] for e in due},
    }
    with atomic_path(out / "measures.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return record


def parser() -> ArgumentParser:
    """The command's flags: `run_experiments`' arguments, and each experiment's settings as `--<name>.<setting>`."""
    p = ArgumentParser(prog="vae-lightning-experiments", description=__doc__.split("\n\n")[0])
    p.add_function_arguments(run_experiments)
    for name, cls in EXPERIMENTS.items():
        p.add_class_arguments(cls, name)
    return p


def main(args: list[str] | None = None) -> dict:
    """The entry point of `vae-lightning-experiments`, under the package's error policy."""
    p = parser()  # a bad flag exits as jsonargparse parses it (usage, exit 2); rules across settings on instantiate
    return run_command("vae-lightning-experiments", lambda: run_experiments(**vars(p.instantiate(p.parse_args(args)))))


def cli_main() -> None:
    main()
