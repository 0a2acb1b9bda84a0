"""Seeded studies: known-good configurations run first, as trials like any other, and are
never pruned; a seed that the space cannot give is refused with the field it names."""

from __future__ import annotations

import copy
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from test_runner import SPACE, STUDY

from metasearch import SpecError
from metasearch.search import StudyConfig, run_study
from metasearch.search.trials import reporter

SEEDS = [
    {
        "name": "paper_a",
        "params": {"outer.algorithm": "fomaml", "inner.lr": 0.05, "outer.meta_lr": 0.003},
    },
    {
        "name": "paper_b",
        "params": {"outer.algorithm": "anil", "inner.lr": 0.01, "outer.meta_lr": 0.001},
    },
]


def config(**fields: Any) -> StudyConfig:
    return StudyConfig.from_dict(copy.deepcopy(STUDY) | {"seeds": SEEDS} | fields)


def test_seeds_run_first_and_appear_as_trials() -> None:
    study = run_study(config(trials=3), storage=optuna.storages.InMemoryStorage())
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.user_attrs.get("seed") for t in trials] == ["paper_a", "paper_b", None]
    assert trials[0].params == SEEDS[0]["params"] and trials[1].params == SEEDS[1]["params"]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    spec = trials[1].user_attrs["spec"]
    assert spec["outer"]["algorithm"] == "anil" and spec["inner"]["lr"] == 0.01
    assert spec["outer"]["iterations"] == trials[1].user_attrs["result"]["iterations"] == 20


def test_a_resumed_study_does_not_queue_its_seeds_again() -> None:
    storage = optuna.storages.InMemoryStorage()
    run_study(config(trials=2), storage=storage)
    study = run_study(config(trials=3), storage=storage)
    assert [t.user_attrs.get("seed") for t in study.trials].count("paper_a") == 1
    assert len(study.trials) == 3


class AlwaysPrune(optuna.pruners.BasePruner):
    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_a_seed_is_never_pruned_while_other_trials_are() -> None:
    study = optuna.create_study(pruner=AlwaysPrune())
    study.enqueue_trial({"x": 1.0}, user_attrs={"seed": "known"})
    seed_trial, other = study.ask(), study.ask()
    assert seed_trial.user_attrs["seed"] == "known"
    assert reporter(seed_trial, prune=False)(10, 0.5) is False
    assert reporter(other)(10, 0.5) is True
    assert seed_trial.storage.get_trial(seed_trial._trial_id).intermediate_values == {10: 0.5}


@pytest.mark.parametrize(
    "params, message",
    [
        ({"outer.algorithm": "fomaml", "inner.lr": 0.05}, "outer.meta_lr"),  # missing
        ({**SEEDS[0]["params"], "inner.lr": 5.0}, "inner.lr: 5.0 is outside"),
        ({**SEEDS[0]["params"], "outer.algorithm": "maml"}, "is not one of"),
        ({**SEEDS[0]["params"], "inner.steps": 3}, "inner.steps: not sampled by the space"),
        ({**SEEDS[0]["params"], "outer.bogus": 1}, "outer.bogus: not sampled"),
        ({**SEEDS[0]["params"], "inner.lr": "3e-3"}, "is not a number"),
    ],
)
def test_a_seed_the_space_cannot_give_is_refused_naming_the_field(params, message) -> None:
    with pytest.raises(SpecError, match="seed 'bad'") as error:
        config(seeds=[{"name": "bad", "params": params}])
    assert message in str(error.value)


def test_seeds_set_per_layer_widths_as_a_list() -> None:
    space = copy.deepcopy(SPACE)
    del space["fixed"]["architecture.widths"]
    space["dimensions"] |= {
        "architecture.depth": {"type": "int", "low": 1, "high": 3},
        "architecture.widths": {"type": "int", "low": 4, "high": 64, "per_layer": True},
    }
    seed = {
        "name": "wide",
        "params": {**SEEDS[0]["params"], "architecture.depth": 2, "architecture.widths": [32, 8]},
    }
    study = run_study(
        config(space=space, seeds=[seed], trials=1), storage=optuna.storages.InMemoryStorage()
    )
    assert study.trials[0].user_attrs["spec"]["architecture"]["widths"] == [32, 8]


@pytest.mark.slow
def test_enqueue_queues_a_configuration_that_runs_first(tmp_path) -> None:
    from test_cli import assert_one_line_error, run
    from test_runner import study_file

    path = study_file(tmp_path, trials=2)
    queued = run("enqueue", path, "outer.algorithm=anil", "inner.lr=0.02", "outer.meta_lr=3e-3")
    assert queued.exit_code == 0 and "queued as trial 0" in queued.output, queued.output
    assert run("search", path).exit_code == 0
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny.db'}")
    first = min(study.trials, key=lambda t: t.number)
    assert first.params == {"outer.algorithm": "anil", "inner.lr": 0.02, "outer.meta_lr": 0.003}
    assert first.user_attrs["seed"] == "by hand" and first.state == TrialState.COMPLETE
    assert_one_line_error(run("enqueue", path, "inner.lr=0.02"), "cannot queue", "outer.")
    assert_one_line_error(run("enqueue", path, "inner.lr"), "is not FIELD=VALUE")


def test_help_and_version_answer_without_torch_optuna_or_plotly() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from metasearch.cli import app\n"
        "for args in (['--help'], ['--version'], ['search', '--help'], ['report', '--help']):\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "loaded = [m in sys.modules for m in ('torch', 'optuna', 'plotly')]\n"
        "print(result.output.splitlines()[0], *loaded)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip().endswith("False False False"), output
