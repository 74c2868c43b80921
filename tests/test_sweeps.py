"""The shipped W&B sweeps (configs/sweeps/): each point's command as `wandb agent` builds it (with W&B's own
functions), run through the CLI as a fast_dev_run for every value of every parameter; the metric each sweep
optimises or records is one its runs log."""

from __future__ import annotations

import pytest
import yaml
from conftest import CONFIGS, REPO, configs

SWEEPS = sorted((CONFIGS / "sweeps").glob("*.yaml"))


def agent_command(sweep: dict, values: dict) -> list[str]:
    """The command `wandb agent` runs for a point with these parameter values (wandb_agent.Agent's steps:
    its macros filled by W&B's `create_sweep_command` and `create_sweep_command_args`)."""
    from wandb.sdk.launch.sweeps import utils

    macros = utils.create_sweep_command_args({"args": {name: {"value": v} for name, v in values.items()}})
    macros |= {"env": ["/usr/bin/env"], "interpreter": ["python"], "program": [sweep.get("program", "")]}
    command = []
    for part in map(str, utils.create_sweep_command(sweep["command"])):
        command += macros[part[2:-1]] if part.startswith("${") and part.endswith("}") else [part]
    return command


def each_value(parameters: dict) -> list[dict]:
    """One point per value of each parameter (a distribution's two ends), the others at the config's default."""
    points = []
    for name, spec in parameters.items():
        values = (
            spec["values"] if "values" in spec else [spec["value"]] if "value" in spec else [spec["min"], spec["max"]]
        )
        points += [{name: value} for value in values]
    return points


def test_sweeps_are_shipped_and_each_names_its_project_method_metric_and_arguments():
    assert {p.stem for p in SWEEPS} >= {"beta", "lr_batch"}
    for path in SWEEPS:
        sweep = yaml.safe_load(path.read_text())
        assert sweep["project"] == "vae-lightning" and sweep["method"] in ("grid", "random", "bayes"), path.name
        assert sweep["metric"]["goal"] in ("minimize", "maximize") and "${args}" in sweep["command"], path.name


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_value_of_a_shipped_sweep_parses_and_trains_and_logs_its_metric(
    path, run_cli, tiny_config, tmp_path, offline
):
    import wandb

    sweep = yaml.safe_load(path.read_text())
    for point in each_value(sweep["parameters"]):
        command = agent_command(sweep, point)
        assert command[:3] == ["/usr/bin/env", "vae-lightning", "fit"], command
        flags = [a for a in command[3:] if a.startswith("--") and "=" in a]  # the point's ${args}
        assert flags == [f"--{name}={value}" for name, value in point.items()]
        fixed = [str(REPO / a) if a.startswith("configs/") else a for a in command[3 : len(command) - len(flags)]]
        try:  # the sweep's configs, then the tiny data (and no training to speak of), then the point's values
            cli = run_cli("fit", *fixed, *configs(tiny_config), "--trainer.fast_dev_run", "true", *flags)
        finally:
            wandb.finish()
        for name, value in point.items():
            assert cli.config["fit"][name] == value, (path.name, name)
        assert sweep["metric"]["name"] in cli.trainer.callback_metrics, (path.name, point)
