"""``metasearch show``: each field only where it applies, each row once, counts as whole
numbers, lists readable back from CSV and JSON, the shared fields readable at any table width,
and the iterations each trial really trained, pruned ones included."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import write_tiny_study
from optuna.trial import TrialState, create_trial
from typer.testing import CliRunner

from metasearch.cli import app
from metasearch.commands.common import STORAGE_VARIABLE
from metasearch.search.fields import SPEC_FIELDS, value_problem
from metasearch.search.study import DIRECTIONS
from metasearch.spec import APPLIES, LearnerSpec, applies

FOMAML = {  # an MLP: no kernel, pooling or head; fixed inner rates: no granularity
    "architecture": {"family": "mlp", "widths": [102, 119]},
    "inner": {"lr": 0.01},
    "outer": {"algorithm": "fomaml"},
}
MAMLPP = {
    "architecture": {"family": "mlp", "widths": [8]},
    "inner": {"lr": 0.1, "learned": True, "granularity": "per_layer_per_step"},
    "outer": {"algorithm": "mamlpp"},
}
PROTONET = {  # no inner loop, no output layer
    "architecture": {"family": "conv", "widths": [16, 16]},
    "inner": {"steps": 0},
    "outer": {"algorithm": "protonet", "train_ways": 20, "meta_batch_size": 1},
}


def run(*args: str | Path, columns: int = 200) -> Any:
    return CliRunner().invoke(
        app,
        [str(a) for a in args],
        catch_exceptions=False,
        env={"COLUMNS": str(columns), STORAGE_VARIABLE: None},  # the study file's storage
    )


def stored_study(
    folder: Path, trials: list[tuple[dict, list[float]]], objectives: list[str]
) -> Path:
    """A study file and its SQLite storage holding complete ``trials`` (spec, objective values)
    as the runner records them, so that show reads learners no sinusoid could train."""
    url = f"sqlite:///{folder / 'made.db'}"
    path = write_tiny_study(folder, stem="made", name="made", storage=url, objectives=objectives)
    study = optuna.create_study(
        storage=url, study_name="made", directions=[DIRECTIONS[o] for o in objectives]
    )
    study.set_user_attr("objectives", objectives)
    for spec, values in trials:
        result = {"query_loss_ci95": 0.1, "n_parameters": int(values[1]), "iterations": 50}
        spec = LearnerSpec.from_dict(spec | {"outer": spec["outer"] | {"iterations": 50}})
        attrs = {"spec": spec.to_dict(), "result": result}
        study.add_trial(create_trial(values=values, user_attrs=attrs, state=TrialState.COMPLETE))
    return path


@pytest.fixture
def front(tmp_path: Path) -> Path:
    """Three learners of three families and algorithms, all on the Pareto front of query loss
    and parameter count."""
    trials = [(FOMAML, [0.5, 13020.0]), (MAMLPP, [0.6, 100.0]), (PROTONET, [0.7, 50.0])]
    return stored_study(tmp_path, trials, ["query_loss", "n_parameters"])


def cells(output: str, label: str) -> list[str]:
    """The cells of the table row ``label``, one per trial shown."""
    for line in output.splitlines():
        parts = [part.strip() for part in line.split("│")]
        if len(parts) > 2 and parts[1] == label:
            return parts[2:-1]
    raise AssertionError(f"no row {label!r} in\n{output}")


def test_applicability_names_real_fields_and_values() -> None:
    for field, conditions in APPLIES.items():
        assert field in SPEC_FIELDS, field
        for ref, values in conditions.items():
            assert ref in SPEC_FIELDS and all(value_problem(ref, v) is None for v in values)
    protonet = {"outer.algorithm": "protonet", "architecture.family": "conv"}
    assert not applies("inner.lr", protonet) and applies("outer.distance", protonet)
    assert applies("architecture.kernel_size", protonet)
    assert not applies("architecture.kernel_size", {"architecture.family": "mlp"})
    assert not applies("inner.granularity", {"inner.learned": False})
    assert applies("inner.granularity", {"outer.algorithm": "metasgd", "inner.learned": True})
    assert applies("outer.msl_fraction", {"outer.algorithm": "mamlpp"})
    assert not applies("outer.msl_fraction", {})  # the default algorithm is maml


def test_the_table_shows_each_field_where_it_applies_and_each_row_once(front: Path) -> None:
    shown = run("show", front)
    assert shown.exit_code == 0, shown.output
    output = shown.stdout
    labels = [line.split("│")[1].strip() for line in output.splitlines() if "│" in line]
    assert labels.count("n parameters") == 1 and labels.count("query loss") == 1
    assert cells(output, "n parameters") == ["13,020", "100", "50"]
    assert "e+0" not in output
    assert cells(output, "iterations trained") == ["50", "50", "50"]
    assert cells(output, "widths") == ["102,119", "8", "16,16"]
    assert cells(output, "kernel_size") == ["", "", "3"]
    assert cells(output, "pooling") == ["", "", "max"]
    assert cells(output, "head") == ["", "", "flatten"]
    assert cells(output, "init.zero_head") == ["False", "False", ""]
    assert cells(output, "inner.steps") == ["1", "1", ""]
    assert cells(output, "inner.lr") == ["0.01", "0.1", ""]
    assert cells(output, "inner.granularity") == ["", "per_layer_per_step", ""]
    assert cells(output, "msl_fraction") == ["", "0.1", ""]
    assert cells(output, "first_order_fraction") == ["", "0.25", ""]
    assert cells(output, "train_ways") == ["", "", "20"]
    assert cells(output, "distance") == ["", "", "euclidean"]
    assert "genotype" not in output  # applies to none of them: no row, no mention
    assert "train_shots" in output  # the protonet's, None: the task's shots


def test_csv_and_json_write_lists_and_counts_as_read_back(front: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(run("show", front, "--format", "csv").stdout)))
    records = json.loads(run("show", front, "--format", "json").stdout)
    assert [r["number"] for r in records] == [int(r["number"]) for r in rows] == [0, 1, 2]
    assert [json.loads(r["architecture.widths"]) for r in rows] == [[102, 119], [8], [16, 16]]
    assert [r["architecture.widths"] for r in records] == [[102, 119], [8], [16, 16]]
    assert [r["n_parameters"] for r in rows] == ["13020", "100", "50"]
    assert [r["n_parameters"] for r in records] == [13020, 100, 50]
    assert all(type(r["n_parameters"]) is int for r in records)
    assert rows[2]["inner.lr"] == "" and records[2]["inner.lr"] is None
    assert rows[0]["architecture.kernel_size"] == "" and records[0]["outer.msl_fraction"] is None
    assert records[2]["architecture.kernel_size"] == 3 and records[1]["outer.msl_fraction"] == 0.1
    assert all("architecture.genotype" not in r for r in [*rows, *records])


def test_one_trial_lists_its_fields_as_rows(front: Path) -> None:
    output = run("show", front, "--top", "1", columns=80).stdout
    assert "all shown" not in output
    assert cells(output, "inner.lr") == ["0.01"] and cells(output, "widths") == ["102,119"]
    assert "kernel_size" not in output and "msl_fraction" not in output


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real sinusoid trials of the same learner but for its learning rates."""
    folder = tmp_path_factory.mktemp("searched")
    study = write_tiny_study(
        folder,
        trials=2,
        budget={"iterations": 10, "eval_tasks": 4},
        sampler={"name": "random", "seed": 0},
    )
    result = run("search", study)
    assert result.exit_code == 0, result.output
    return study


@pytest.mark.slow
def test_the_shared_fields_wrap_at_the_terminal_not_the_table(searched: Path) -> None:
    output = run("show", searched, columns=100).stdout
    shared = [line for line in output.splitlines() if line.startswith("all shown: ")]
    assert shared, output
    table_width = max(len(line) for line in output.splitlines() if "│" in line)
    assert table_width < 80 and len(shared[0]) > table_width, output
    assert "family=mlp" in output and "kernel_size" not in output and "pooling" not in output
    assert cells(output, "iterations trained") == ["10", "10"]


@pytest.mark.slow
def test_a_pruned_trial_shows_the_iterations_it_trained(tmp_path: Path) -> None:
    """Too slow for ``min_iterations``: pruned after the few iterations that timed it."""
    budget = {"iterations": 50, "time_limit": 60, "min_iterations": 1_000_000, "eval_tasks": 4}
    study = write_tiny_study(tmp_path, trials=1, budget=budget)
    assert run("search", study).exit_code == 0
    output = run("show", study).stdout
    assert cells(output, "state") == ["PRUNED"]
    assert cells(output, "iterations trained") == ["3"]
    (record,) = json.loads(run("show", study, "--format", "json").stdout)
    assert record["state"] == "PRUNED" and record["iterations"] == 3
    assert record["outer.iterations"] == 3
