"""Running studies: resuming, pruning, failures, several objectives, and refusing changes."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from metasearch import SpecError
from metasearch.engines import GroupedEngine, VmapEngine
from metasearch.errors import MetasearchError
from metasearch.search import (
    StudyConfig,
    best_trials,
    load_study_file,
    open_for_reading,
    open_study,
    run_study,
    trials_frame,
)
from metasearch.search.runner import MAX_FAILURES_IN_A_ROW, _protocol
from metasearch.search.weights import load_trial_weights, study_files

# Tiny candidates: one hidden layer of 16 units, first-order or head-only, 20 iterations.
SPACE: dict[str, Any] = {
    "name": "tiny",
    "fixed": {
        "architecture.family": "mlp",
        "architecture.widths": [16],
        "architecture.normalization": "none",
        "init.scheme": "xavier",
        "inner.steps": 1,
        "outer.meta_batch_size": 4,
    },
    "dimensions": {
        "outer.algorithm": {"type": "categorical", "choices": ["fomaml", "anil"]},
        "inner.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        "outer.meta_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
}
STUDY: dict[str, Any] = {
    "name": "tiny",
    "task": {"source": "sinusoid", "shots": 5, "query_points": 5},
    "space": SPACE,
    "sampler": {"name": "random"},
    "budget": {"iterations": 20, "eval_tasks": 10},
    "trials": 3,
    "device": "cpu",
}


def study_file(tmp_path: Path, **fields: Any) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(copy.deepcopy(STUDY) | fields, sort_keys=False))
    return path


def states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.trials]


@pytest.mark.slow
def test_runs_in_sqlite_beside_the_file_and_a_rerun_tops_up(tmp_path: Path) -> None:
    path = study_file(tmp_path)
    first = run_study(load_study_file(path), n_trials=2)
    assert states(first) == [TrialState.COMPLETE] * 2
    assert (tmp_path / "tiny.db").is_file()
    assert first.user_attrs["search_space"] == "tiny"
    assert first.metric_names == ["query_loss"]  # the dashboard's name for the objective
    assert first.user_attrs["study_file_sha256"] == load_study_file(path).file_sha256

    again = run_study(load_study_file(path))  # trials: 3 in all, so one more
    assert states(again) == [TrialState.COMPLETE] * 3
    assert len(run_study(load_study_file(path)).trials) == 3  # done: nothing to add

    trial = again.trials[0]
    assert trial.user_attrs["spec"]["outer"]["algorithm"] == trial.params["outer.algorithm"]
    assert trial.user_attrs["result"]["status"] == "complete"
    files = study_files(load_study_file(path).storage, again)
    assert files is not None and files.store.base == tmp_path / "tiny.weights"
    weights = load_trial_weights(files, trial)
    assert weights is not None and "param.head.weight" in weights
    (meta,) = get_all_artifact_meta(trial, storage=open_for_reading(load_study_file(path).storage))
    assert meta.filename == "trial-0.safetensors"
    assert meta.artifact_id == trial.user_attrs["weights"]["artifact_id"]
    assert (tmp_path / "tiny.weights" / meta.artifact_id).is_file()


@pytest.mark.slow
def test_results_table_and_best_trials(tmp_path: Path) -> None:
    study = run_study(load_study_file(study_file(tmp_path, trials=4)))
    frame = trials_frame(study)
    assert len(frame) == 4 and list(frame["query_loss"]) == sorted(frame["query_loss"])
    assert {"number", "state", "query_loss_ci95", "n_parameters", "meta_train_seconds"} <= set(
        frame.columns
    )
    assert frame.loc[0, "architecture.widths"] == [16]
    assert frame.loc[0, "outer.algorithm"] in ("fomaml", "anil")
    best = best_trials(study, 2)
    assert [t.number for t in best] == list(frame["number"][:2])


@pytest.mark.slow
def test_a_changed_space_is_refused_but_other_edits_resume(tmp_path: Path) -> None:
    run_study(load_study_file(study_file(tmp_path)), n_trials=1)
    renamed = copy.deepcopy(SPACE) | {"description": "same space, new words"}
    open_study(load_study_file(study_file(tmp_path, space=renamed, trials=10)))

    wider = copy.deepcopy(SPACE)
    wider["dimensions"]["inner.lr"]["high"] = 0.5
    with pytest.raises(SpecError, match="different search space dimensions.inner.lr"):
        open_study(load_study_file(study_file(tmp_path, space=wider)))
    with pytest.raises(SpecError, match="different budget"):
        open_study(load_study_file(study_file(tmp_path, budget={"iterations": 40})))


def test_the_space_is_recorded_one_short_line_per_part(tmp_path: Path) -> None:
    study = open_study(load_study_file(study_file(tmp_path)))
    attrs = study.user_attrs
    assert attrs["space.fixed.architecture.widths"] == "[16]"
    assert attrs["space.dimensions.inner.lr"] == "{type: float, low: 0.001, high: 0.1, log: true}"
    assert attrs["space.dimensions.outer.algorithm"] == (
        "{type: categorical, choices: [fomaml, anil]}"
    )
    assert all(len(str(v)) < 120 for v in attrs.values() if not isinstance(v, dict))


def test_a_study_recorded_as_one_mapping_resumes_and_refuses_changes(tmp_path: Path) -> None:
    """Studies made before the space had one attribute per part kept it whole."""
    config = load_study_file(study_file(tmp_path))
    study = optuna.create_study(storage=config.storage, study_name=config.name)
    for key, value in _protocol(config).items():
        study.set_user_attr(key, value)
    study.set_user_attr("search_space", config.space.model_dump(mode="json", by_alias=True))
    open_study(load_study_file(study_file(tmp_path, trials=10)))

    wider = copy.deepcopy(SPACE)
    wider["dimensions"]["inner.lr"]["high"] = 0.5
    with pytest.raises(SpecError, match="different search space dimensions.inner.lr"):
        open_study(load_study_file(study_file(tmp_path, space=wider)))


@pytest.mark.slow
def test_a_pruner_stops_weak_candidates() -> None:
    space = copy.deepcopy(SPACE)
    space["dimensions"] = {  # learning against barely learning: the median tells them apart
        "outer.meta_lr": {"type": "categorical", "choices": [1e-2, 1e-7]},
        "inner.lr": {"type": "categorical", "choices": [0.05, 1e-6]},
    }
    config = StudyConfig.from_dict(
        STUDY
        | {
            "space": space,
            "sampler": {"name": "random", "seed": 1},
            "pruner": {"name": "median", "options": {"n_startup_trials": 2}},
            "budget": {"iterations": 20, "eval_every": 5, "eval_tasks": 10},
            "trials": 8,
        }
    )
    study = run_study(config)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and len(study.trials) == 8
    assert all(t.user_attrs["result"]["status"] == "pruned" for t in pruned)
    assert all(t.intermediate_values for t in study.trials)


@pytest.mark.slow
def test_a_failing_candidate_is_recorded_and_the_study_goes_on() -> None:
    space = copy.deepcopy(SPACE)
    space["fixed"]["inner.steps"] = 5
    space["dimensions"]["inner.lr"] = {"type": "categorical", "choices": [50.0, 0.01]}
    config = StudyConfig.from_dict(STUDY | {"space": space, "trials": 2})
    storage = optuna.storages.InMemoryStorage()
    open_study(config, storage).enqueue_trial({"inner.lr": 50.0, "outer.algorithm": "fomaml"})
    study = run_study(config, storage=storage)
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(failed) >= 1 and failed[0].number == 0
    assert "diverged" in failed[0].user_attrs["failure"]
    assert math.isnan(failed[0].user_attrs["result"]["query_loss"])
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2


def test_an_invalid_spec_fails_its_trial_only() -> None:
    space = copy.deepcopy(SPACE)  # metasgd needs inner.learned, which this space never sets
    space["dimensions"]["outer.algorithm"]["choices"] = ["fomaml", "metasgd"]
    config = StudyConfig.from_dict(STUDY | {"space": space, "trials": 2})
    storage = optuna.storages.InMemoryStorage()
    open_study(config, storage).enqueue_trial({"outer.algorithm": "metasgd"})
    study = run_study(config, storage=storage)
    assert study.trials[0].state == TrialState.FAIL
    assert "SpecError" in study.trials[0].user_attrs["failure"]
    assert "set inner.learned" in study.trials[0].user_attrs["failure"]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2


def test_a_run_of_failures_stops_the_study() -> None:
    space = copy.deepcopy(SPACE)
    space["fixed"]["outer.algorithm"] = "metasgd"  # invalid without inner.learned
    del space["dimensions"]["outer.algorithm"]
    storage = optuna.storages.InMemoryStorage()
    config = StudyConfig.from_dict(STUDY | {"space": space, "trials": 50})
    with pytest.raises(MetasearchError, match=f"the last {MAX_FAILURES_IN_A_ROW} trials failed"):
        run_study(config, storage=storage)
    study = optuna.load_study(study_name=config.name, storage=storage)
    assert states(study) == [TrialState.FAIL] * MAX_FAILURES_IN_A_ROW


def test_several_objectives_give_a_pareto_front() -> None:
    space = copy.deepcopy(SPACE)
    del space["fixed"]["architecture.widths"]
    space["fixed"]["architecture.depth"] = 1
    space["dimensions"]["architecture.widths"] = {"type": "int", "low": 2, "high": 64, "log": True}
    config = StudyConfig.from_dict(
        STUDY
        | {
            "space": space,
            "objectives": ["query_loss", "n_parameters"],
            "sampler": {"name": "nsga2", "seed": 0, "options": {"population_size": 4}},
            "trials": 6,
        }
    )
    study = run_study(config)
    front = best_trials(study)
    assert front and {t.number for t in front} == {t.number for t in study.best_trials}
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        for best in front:  # nothing beats a front member in both objectives
            assert not (trial.values[0] < best.values[0] and trial.values[1] < best.values[1])
    assert study.metric_names == ["query_loss", "n_parameters"]
    frame = trials_frame(study)
    assert list(frame.columns[2:4]) == ["query_loss", "n_parameters"]
    assert set(frame.loc[frame["pareto"], "number"]) == {t.number for t in front}
    assert frame["pareto"].iloc[: len(front)].all()


def test_a_space_the_task_cannot_take_is_refused_before_any_trial() -> None:
    space = copy.deepcopy(SPACE)
    space["dimensions"]["outer.algorithm"]["choices"] = ["fomaml", "protonet"]
    config = StudyConfig.from_dict(STUDY | {"space": space})
    with pytest.raises(SpecError, match="protonet needs classification tasks"):
        run_study(config)


def test_a_candidate_out_of_device_memory_fails_with_its_reason_and_the_study_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CI has no GPU to exhaust: the meta-step of the first candidate raises what CUDA raises.
    calls = []
    for engine in (GroupedEngine, VmapEngine):

        def first_runs_out(self: Any, *args: Any, original: Any = engine.meta_gradients) -> Any:
            calls.append(1)
            if len(calls) == 3:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return original(self, *args)

        monkeypatch.setattr(engine, "meta_gradients", first_runs_out)
    study = run_study(StudyConfig.from_dict(STUDY | {"trials": 2}))
    assert states(study) == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    failed = study.trials[0]
    assert "ran out of device memory" in failed.user_attrs["failure"]
    assert failed.user_attrs["result"]["iterations"] == 2


def test_a_journal_storage_runs_and_resumes_a_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # trial weights go beside the journal file
    storage = f"journal:{tmp_path / 'tiny.log'}"
    config = StudyConfig.from_dict(STUDY | {"trials": 2})
    run_study(config, storage=storage)
    study = run_study(config, n_trials=3, storage=storage)
    assert states(study) == [TrialState.COMPLETE] * 3
    assert len({t.params["inner.lr"] for t in study.trials}) == 3
    artifact = study.trials[2].user_attrs["weights"]["artifact_id"]
    assert (tmp_path / "tiny.weights" / artifact).is_file()
    assert not any((tmp_path / "elsewhere").iterdir())
