"""scripts/reproduce_seed.py: the rules on the committed report's own measures, the report over seeds, and
claims left out when their runs were not trained."""

from __future__ import annotations

import copy
import json
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from reproduce_seed import RUNS, decide, write_report

MEASURES = REPO / "docs" / "seed_report" / "measures"


def committed() -> dict[str, dict]:
    """The measures the committed report was written from (its first seed, 42), by run."""
    return {name: json.loads((MEASURES / f"{name}-seed42.json").read_text())["experiments"] for name in RUNS}


def test_the_rules_decide_the_committed_report_s_verdicts_again():
    verdicts = decide(committed())
    recorded = json.loads((REPO / "docs" / "seed_report" / "verdicts.json").read_text())["verdicts"]["42"]
    assert [v.number for v in verdicts] == list(range(1, 10))
    assert [v.holds for v in verdicts] == [v["holds"] for v in recorded]
    assert all(v.values for v in verdicts)


def test_a_claim_whose_runs_were_not_trained_is_left_out():
    measures = committed()
    only = {name: measures[name] for name in ("two_latent", "no_kld")}
    assert [v.number for v in decide(only)] == [4, 5, 6, 7]


def test_the_report_counts_the_seeds_each_claim_holds_in(tmp_path):
    first = committed()
    second = copy.deepcopy(first)
    second["no_kld"]["latent_scatter"].update(empty_share=0.5, empty_unclear=0.9)  # wide empty regions of noise
    by_seed = {42: decide(first), 43: decide(second)}
    assert by_seed[42][6].holds != by_seed[43][6].holds  # claim 7 flips
    workdir = tmp_path / "work"
    for seed in by_seed:
        for name in RUNS:
            folder = workdir / f"seed{seed}" / name / "experiments"
            folder.mkdir(parents=True)
            (folder / "measures.json").write_text(json.dumps({"experiments": first[name]}))
            for experiment in first[name]:
                (folder / f"{experiment}.png").write_bytes(b"png")
    summary = {
        "date": "today", "machine": "here", "arguments": "--seeds 2", "epochs": None, "minutes": 1.0,
        "classifier": {"clear_threshold": 0.8, "test_accuracy": 0.99, "test_clear": 0.98, "noise_rejected": 0.95},
        "runs": {name: {"epochs": 20, "val_nelbo": [100.0, 102.0]} for name in RUNS},
    }  # fmt: skip
    write_report(tmp_path / "report", by_seed, summary, workdir)
    text = (tmp_path / "report" / "README.md").read_text()
    assert "## 7. Holds in 1 of 2 seeds" in text and "| rule met | " in text
    assert "| vanilla | MLP, 20 latents | 20 | 101 ± 1.4 |" in text
    assert (tmp_path / "report" / "measures" / "no_kld-seed43.json").is_file()
    # a second report beside the first: each claim's numbers next to the first report's, over its seeds
    write_report(
        tmp_path / "longer", {42: by_seed[43]}, {**summary, "epochs": 100}, workdir, beside=tmp_path / "report"
    )
    longer = (tmp_path / "longer" / "README.md").read_text()
    assert "| number | seed 42 | mean ± sd | report (configs' epochs, 2 seeds): mean ± sd |" in longer
    assert "| empty_share | 0.5 | 0.5 |" in longer and "| rule met | yes | 1 | 1 of 2 |" in longer
    # the first report links the second, kept in a sub-folder of it, when written again
    write_report(tmp_path / "report" / "e100", {42: by_seed[43]}, {**summary, "epochs": 100}, workdir)
    write_report(tmp_path / "report", by_seed, summary, workdir)
    assert (
        "**Other reports beside this one:** [e100](e100/README.md)" in (tmp_path / "report" / "README.md").read_text()
    )
