"""``metasearch train``: the chosen configuration meta-trained again with a larger budget,
checkpointed and resumable, then exported with what it really trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
from rich.console import Console
from test_cli import assert_one_line_error, run, write_classes, write_study

from metasearch.commands import training
from metasearch.commands.training import RetrainBudget, train_and_export
from metasearch.errors import MetasearchError
from metasearch.spec import LrSchedule

SEED = {"name": "paper", "params": {"inner.lr": 0.3, "outer.meta_lr": 0.005}}


@pytest.fixture
def study(tmp_path: Path) -> Path:
    write_classes(tmp_path / "classes", n_classes=40, per_class=6, seed=0)
    return write_study(tmp_path, budget={"iterations": 20, "eval_tasks": 20}, seeds=[SEED])


@pytest.mark.slow
def test_train_retrains_the_best_trial_longer_and_exports_it(study: Path, tmp_path: Path) -> None:
    assert run("search", study).exit_code == 0
    shown = json.loads(run("show", study, "--format", "json").output)
    trained = run("train", study, "--iterations", "60", "--out", tmp_path / "long")
    assert trained.exit_code == 0, trained.output
    assert "meta-trained 60 iterations" in " ".join(trained.output.split())
    metadata = json.loads((tmp_path / "long" / "learner.json").read_text())
    provenance = metadata["provenance"]
    assert provenance["retrained"] and provenance["trial"] == shown[0]["number"]
    assert provenance["training"]["iterations"] == 60 and shown[0]["iterations"] == 20
    assert provenance["training"]["budget"] == "60 meta-iterations"
    assert 0 <= metadata["scores"]["test"]["accuracy"] <= 1
    weights = study.with_suffix(".weights")
    assert weights.is_dir() and not any(weights.rglob("retrain/*/state.safetensors"))  # cleared


@pytest.mark.slow
def test_train_a_seed_without_searching(study: Path, tmp_path: Path) -> None:
    trained = run("train", study, "--seed", "paper", "--seconds", "2", "--out", tmp_path / "seed")
    assert trained.exit_code == 0, trained.output
    metadata = json.loads((tmp_path / "seed" / "learner.json").read_text())
    assert metadata["provenance"]["seed"] == "paper"
    assert metadata["spec"]["inner"]["lr"] == 0.3
    assert 0 < metadata["provenance"]["training"]["meta_train_seconds"] < 2 + 1.0
    assert_one_line_error(
        run("train", study, "--seed", "nope", "--iterations", "5", "--out", tmp_path / "x"),
        "no seed 'nope'",
        "paper",
    )
    assert_one_line_error(
        run("train", study, "--seed", "paper", "--out", tmp_path / "x"), "--seconds"
    )


@pytest.mark.slow
def test_train_replaces_the_schedule_where_asked(study: Path, tmp_path: Path) -> None:
    out = tmp_path / "cosine"
    trained = run(
        "train", study, "--seed", "paper", "--iterations", "8", "--lr-schedule", "cosine",
        "--out", out,
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    metadata = json.loads((out / "learner.json").read_text())
    assert metadata["spec"]["outer"]["lr_schedule"] == "cosine"
    assert metadata["provenance"]["lr_schedule_replaced"] == "constant"  # the seed's
    assert metadata["spec"]["inner"]["lr"] == 0.3  # the rest is the seed's
    assert "schedule replaced for that (it was constant" in (out / "README.md").read_text()


def test_an_unknown_schedule_gets_one_line(study: Path, tmp_path: Path) -> None:
    assert_one_line_error(
        run(
            "train",
            study,
            "--seed",
            "paper",
            "--iterations",
            "8",
            "--lr-schedule",
            "linear",
            "--out",
            tmp_path / "x",
        ),  # fmt: skip
        "--lr-schedule must be one of",
        *get_args(LrSchedule),
    )


class StopAfter:
    """Stands in for the Ctrl-C handler: asks to stop after ``calls`` checks."""

    exit_code = 130

    def __init__(self, console: Console, calls: int = 7) -> None:
        self.calls = calls

    def __enter__(self) -> StopAfter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __call__(self) -> bool:
        self.calls -= 1
        return self.calls < 0


@pytest.mark.slow
def test_an_interrupted_retraining_resumes_from_its_checkpoint(
    study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    console = Console(stderr=True)
    budget = RetrainBudget(iterations=30)
    arguments = (study, "best", "paper", budget, tmp_path / "out", None, None, "cpu", console)
    monkeypatch.setattr(training, "GracefulStop", StopAfter)
    assert train_and_export(*arguments) == 130
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(training, "GracefulStop", lambda console: StopAfter(console, 10**6))
    assert train_and_export(*arguments) == 0
    record = json.loads((tmp_path / "out" / "learner.json").read_text())["provenance"]
    assert record["training"]["resumed_from"] == 8 and record["training"]["iterations"] == 30
    with pytest.raises(MetasearchError, match="one of --seconds"):
        RetrainBudget(seconds=1, iterations=2).to_budget(None)  # type: ignore[arg-type]
