"""Candidates meta-trained together as one population equal each candidate trained alone."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState
from test_algorithms import TASKS, WAYS, random_tasks  # the same random tasks
from test_budget import spec as mlp_spec
from test_budget import training

from metasearch import Budget, LearnerSpec, SinusoidSource, SpecError, evaluate
from metasearch.algorithms import get_algorithm
from metasearch.engines import GROUPED, VMAP
from metasearch.engines import grouped as grouped_engine
from metasearch.engines.grouped import GroupedEngine
from metasearch.engines.vmap import VmapEngine
from metasearch.evaluation import (
    CheckpointStore,
    EvaluationResult,
    TrainingInterrupted,
    check_population,
    evaluate_population,
)
from metasearch.evaluation.evaluator import train
from metasearch.learners import build_learner
from metasearch.search import StudyConfig, open_for_reading, open_study, rounds, run_study
from metasearch.search.population import is_free
from metasearch.search.weights import load_trial_weights, study_files

CONV = {"widths": [3, 4], "normalization": "batch"}


def candidate(algorithm: str, lr: float, scheme: str, **inner) -> LearnerSpec:
    return LearnerSpec.from_dict(
        {
            "architecture": CONV,
            "init": {"scheme": scheme},
            "inner": {"steps": 2, "lr": lr, **inner},
            "outer": {"algorithm": algorithm},
        }
    )


def population(algorithm: str, **inner) -> list:
    specs = [
        candidate(algorithm, lr, scheme, **inner)
        for lr, scheme in [(0.3, "kaiming"), (0.1, "xavier"), (0.5, "normal")]
    ]
    return [
        build_learner(s, (1, 6, 6), WAYS, "classification", seed=i, dtype=torch.float64)
        for i, s in enumerate(specs)
    ]


@pytest.mark.parametrize(
    "algorithm, inner",
    [
        ("maml", {}),
        ("fomaml", {}),
        ("metasgd", {"learned": True, "granularity": "per_parameter"}),
        ("anil", {}),
        ("reptile", {}),
        ("mamlpp", {"learned": True, "granularity": "per_layer_per_step"}),
    ],
)
@pytest.mark.slow
@pytest.mark.parametrize("groups", [2, 12])  # learners in passes of two; all in one pass
def test_population_meta_gradients_equal_each_candidate_alone(
    algorithm: str, inner: dict, groups: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(grouped_engine.CPU_GROUPS, "float32", groups)
    learners, batch = population(algorithm, **inner), random_tasks()
    together = GROUPED.meta_gradients(get_algorithm(algorithm), learners, batch, 0.5)
    for learner, result in zip(learners, together, strict=True):
        alone = VMAP.meta_gradients(get_algorithm(algorithm), [learner], batch, 0.5)[0]
        for a, b in zip(result.grads, alone.grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(result.task_losses, alone.task_losses, rtol=1e-10, atol=1e-12)
        assert result.task_losses.shape == (TASKS,)


@pytest.mark.parametrize("algorithm", ["maml", "reptile", "protonet"])
def test_grouped_path_equals_vmap_path(algorithm: str) -> None:
    steps = {"steps": 0} if algorithm == "protonet" else {}
    learner = population(algorithm, **steps)[0]
    batch, method = random_tasks(), get_algorithm(algorithm)
    grouped = GROUPED.meta_gradients(method, [learner], batch, 0.0)[0]
    mapped = VMAP.meta_gradients(method, [learner], batch, 0.0)[0]
    for a, b in zip(grouped.grads, mapped.grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        GROUPED.predict_tasks(method, learner, batch), VMAP.predict_tasks(method, learner, batch)
    )


def sinusoid(meta_lr: float, inner_lr: float, optimizer: str = "adam") -> LearnerSpec:
    return LearnerSpec.from_dict(
        {
            "architecture": {"family": "mlp", "widths": [16, 16], "normalization": "batch"},
            "init": {"scheme": "xavier"},
            "inner": {"lr": inner_lr},
            "outer": {
                "meta_batch_size": 4,
                "iterations": 12,
                "meta_lr": meta_lr,
                "optimizer": optimizer,
            },
        }
    )


def test_population_results_equal_evaluating_each_alone() -> None:
    specs = [sinusoid(1e-3, 0.01), sinusoid(3e-3, 0.02, "sgd"), sinusoid(1e-2, 0.005)]
    source, budget = SinusoidSource(), Budget(eval_tasks=10, eval_every=5, seed=3)
    together = evaluate_population(specs, source, budget)
    for spec, result in zip(specs, together, strict=True):
        alone = evaluate(spec, source, budget)
        assert result.status == alone.status == "complete"
        assert result.iterations == alone.iterations == 12
        assert result.query_loss == pytest.approx(alone.query_loss, rel=1e-5)
        assert [i for i, _ in result.curve] == [5, 10]
        for (_, a), (_, b) in zip(result.curve, alone.curve, strict=True):
            assert a == pytest.approx(b, rel=1e-5)


def test_a_pruned_candidate_leaves_and_the_others_go_on() -> None:
    specs = [sinusoid(1e-3, 0.01), sinusoid(3e-3, 0.02)]
    budget = Budget(eval_tasks=10, eval_every=5)
    results = evaluate_population(
        specs, SinusoidSource(), budget, reports=[lambda i, loss: True, None]
    )
    assert results[0].status == "pruned" and results[0].iterations == 5
    assert results[1].status == "complete" and results[1].iterations == 12


def test_candidates_of_different_shapes_are_refused() -> None:
    check_population([sinusoid(1e-3, 0.01), sinusoid(1e-2, 0.1, "sgd")])
    data = sinusoid(1e-3, 0.01).model_dump()
    wider = LearnerSpec.from_dict(
        {**data, "architecture": {**data["architecture"], "widths": [32]}}
    )
    with pytest.raises(SpecError, match=r"differs from candidate 0 in architecture\.widths"):
        evaluate_population([sinusoid(1e-3, 0.01), wider], SinusoidSource())
    other = LearnerSpec.from_dict({**data, "outer": {**data["outer"], "algorithm": "fomaml"}})
    with pytest.raises(SpecError, match="may differ only in init, inner.lr"):
        check_population([sinusoid(1e-3, 0.01), other])
    with pytest.raises(SpecError, match="at least one"):
        check_population([])


POPULATION_STUDY = {
    "name": "population",
    "task": {"source": "sinusoid", "shots": 5, "query_points": 5},
    "space": {
        "name": "shapes-and-rates",
        "fixed": {"architecture.family": "mlp", "architecture.normalization": "none"},
        "dimensions": {
            "architecture.depth": {"type": "int", "low": 1, "high": 2},
            "architecture.widths": {"type": "int", "low": 8, "high": 32, "per_layer": True},
            "outer.algorithm": {"type": "categorical", "choices": ["maml", "fomaml"]},
            "init.scheme": {"type": "categorical", "choices": ["kaiming", "xavier", "normal"]},
            "inner.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
            "outer.meta_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        },
    },
    "sampler": {"name": "random"},
    "budget": {"iterations": 15, "eval_tasks": 10},
    "trials": 5,
    "population": 3,
    "device": "cpu",
}


def test_a_population_study_trains_trials_of_one_shape_together_as_each_alone() -> None:
    config = StudyConfig.from_dict(POPULATION_STUDY)
    study = run_study(config)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5  # populations of 3, then 2
    for members in (trials[:3], trials[3:]):
        shapes = [{k: v for k, v in t.params.items() if not is_free(k)} for t in members]
        assert all(shape == shapes[0] for shape in shapes)
        assert len({t.params["inner.lr"] for t in members}) == len(members)
    source, budget = SinusoidSource(shots=5, query_points=5), config.budget.to_budget(config.seed)
    for trial in (trials[1], trials[4]):
        alone = evaluate(LearnerSpec.from_dict(trial.user_attrs["spec"]), source, budget)
        assert trial.value == pytest.approx(alone.query_loss, rel=1e-4)


def test_a_population_with_a_diverging_member_loses_only_that_member() -> None:
    config = StudyConfig.from_dict(POPULATION_STUDY | {"trials": 3})
    storage = optuna.storages.InMemoryStorage()
    study = open_study(config, storage)
    study.enqueue_trial({"outer.algorithm": "fomaml", "architecture.depth": 1, "inner.lr": 0.01})
    with pytest.warns(UserWarning, match="out of range"):  # the member's rate is absurd
        study.enqueue_trial({"inner.lr": 1e30})
        study = run_study(config, storage=storage)
    complete, fail = TrialState.COMPLETE, TrialState.FAIL
    assert [t.state for t in study.trials] == [complete, fail, complete, complete]
    failure = study.trials[1].user_attrs["failure"]
    assert "diverged" in failure or "not finite" in failure
    assert study.trials[1].params["architecture.depth"] == 1  # it was a member all the same


def test_population_and_darts_do_not_mix() -> None:
    study = POPULATION_STUDY | {
        "task": {"source": "omniglot", "ways": 5, "shots": 1},
        "strategy": "darts",
    }
    with pytest.raises(SpecError, match="population"):
        StudyConfig.from_dict(study)


@pytest.mark.slow
def test_population_members_beat_while_they_train_and_keep_their_weights_as_artifacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = f"sqlite:///{tmp_path / 'population.db'}"
    config = StudyConfig.from_dict(
        POPULATION_STUDY | {"trials": 2, "population": 2, "heartbeat": {"interval": 1}}
    )
    beats: Counter[int] = Counter()
    record = optuna.storages.RDBStorage.record_heartbeat

    def counted(self: optuna.storages.RDBStorage, trial_id: int) -> None:
        beats[trial_id] += 1
        record(self, trial_id)

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2.5)  # long enough for a few heartbeats
        return evaluate_population(*args, **kwargs)

    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", counted)
    monkeypatch.setattr(rounds, "evaluate_population", slow)
    study = run_study(config, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(beats) == sorted(t._trial_id for t in study.trials)
    assert all(count >= 2 for count in beats.values()), beats
    reading = open_for_reading(storage)
    for trial in study.trials:
        (meta,) = get_all_artifact_meta(trial, storage=reading)
        assert meta.artifact_id == trial.user_attrs["weights"]["artifact_id"]
        assert meta.filename == f"trial-{trial.number}.safetensors"
    files = study_files(storage, study)
    assert all(load_trial_weights(files, t) is not None for t in study.trials)


def stores(folder: Path, count: int, every: int = 2) -> list[CheckpointStore]:
    return [CheckpointStore(folder / f"candidate-{i}", every) for i in range(count)]


def test_a_stopped_population_resumes_exactly(tmp_path: Path) -> None:
    specs = [sinusoid(1e-3, 0.01), sinusoid(3e-3, 0.02, "sgd")]
    source, budget = SinusoidSource(), Budget(eval_tasks=10, eval_every=5, seed=3)
    straight = evaluate_population(specs, source, budget)
    calls = iter(range(100))
    stopped = evaluate_population(
        specs, source, budget, checkpoints=stores(tmp_path, 2), stop=lambda: next(calls) == 6
    )
    assert [r.iteration for r in stopped if isinstance(r, TrainingInterrupted)] == [7, 7]
    resumed = evaluate_population(specs, source, budget, checkpoints=stores(tmp_path, 2))
    for again, alone in zip(resumed, straight, strict=True):
        assert isinstance(again, EvaluationResult) and isinstance(alone, EvaluationResult)
        assert again.resumed_from == 7 and again.iterations == alone.iterations == 12
        assert again.query_loss == pytest.approx(alone.query_loss, rel=1e-6)
        assert [i for i, _ in again.curve] == [i for i, _ in alone.curve] == [5, 10]
        assert [v for _, v in again.curve] == pytest.approx([v for _, v in alone.curve], rel=1e-6)


def test_a_population_resumes_only_where_every_candidate_has_the_same_checkpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    specs = [sinusoid(1e-3, 0.01), sinusoid(3e-3, 0.02)]
    source, budget = SinusoidSource(), Budget(eval_tasks=10, seed=3)
    calls = iter(range(100))
    evaluate_population(
        specs[:1], source, budget, checkpoints=stores(tmp_path, 1), stop=lambda: next(calls) == 3
    )  # the first candidate alone has a checkpoint
    with caplog.at_level("WARNING", logger="metasearch.evaluation.evaluator"):
        results = evaluate_population(specs, source, budget, checkpoints=stores(tmp_path, 2))
    assert "1 of 2 candidates have checkpoints" in caplog.text
    assert [r.resumed_from for r in results if isinstance(r, EvaluationResult)] == [None, None]
    alone = evaluate(specs[0], source, budget)
    assert isinstance(results[0], EvaluationResult)
    assert results[0].query_loss == pytest.approx(alone.query_loss)


def test_a_candidate_that_ended_before_a_stop_keeps_its_result(tmp_path: Path) -> None:
    specs = [sinusoid(1e-3, 0.01), sinusoid(3e-3, 0.02)]
    calls = iter(range(100))
    results = evaluate_population(
        specs,
        SinusoidSource(),
        Budget(eval_tasks=10, eval_every=5),
        reports=[lambda i, loss: True, None],
        checkpoints=stores(tmp_path, 2),
        stop=lambda: next(calls) == 7,
    )
    pruned, stopped = results
    assert isinstance(pruned, EvaluationResult) and pruned.status == "pruned"
    assert pruned.iterations == 5
    assert isinstance(stopped, TrainingInterrupted) and stopped.iteration == 8
    first, second = (store.load() for store in stores(tmp_path, 2))
    assert first is not None and first.iteration == 4  # its last before it ended
    assert second is not None and second.iteration == 8  # where the stop came


@pytest.mark.slow
def test_a_population_keeps_each_candidates_time_limit_to_one_iteration() -> None:
    budget = Budget(unit="seconds", time_limit=0.6, eval_tasks=4)
    runs = [training(mlp_spec(), budget, 0.05), training(mlp_spec(meta_lr=0.01), budget, 0.05)]
    train(runs, [None, None])
    for run in runs:
        assert run.ended and run.failure is None
        assert budget.time_limit - 2 * max(run.costs) < run.seconds <= 0.6 + max(run.costs)
    assert abs(runs[0].done - runs[1].done) <= 1  # each charged the step and its own update


def test_a_population_out_of_memory_fails_every_candidate_still_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def out_of_memory(*args: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    for engine in (VmapEngine, GroupedEngine):
        monkeypatch.setattr(engine, "meta_gradients", out_of_memory)
    results = evaluate_population(
        [sinusoid(1e-3, 0.01), sinusoid(3e-3, 0.02)], SinusoidSource(), Budget(eval_tasks=4)
    )
    for result in results:
        assert isinstance(result, EvaluationResult) and result.status == "failed"
        assert result.reason is not None and "out of device memory" in result.reason


@pytest.mark.slow
def test_a_stopped_population_study_resumes_in_its_retried_trials(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = f"sqlite:///{tmp_path / 'population.db'}"
    config = StudyConfig.from_dict(
        POPULATION_STUDY | {"trials": 2, "population": 2, "checkpoint_every": 4}
    )
    calls = iter(range(1000))
    run_study(config, storage=storage, stop=lambda: next(calls) == 9)  # after iteration 9
    interrupted = optuna.load_study(study_name="population", storage=storage).trials
    assert [t.state for t in interrupted] == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2
    assert all("interrupted" in t.user_attrs["failure"] for t in interrupted[:2])
    saved = list(tmp_path.glob("population.weights/population/*/checkpoints/trial-*"))
    assert len(saved) == 2
    with caplog.at_level("INFO", logger="metasearch.evaluation.evaluator"):
        study = run_study(config, storage=storage)
    assert caplog.text.count("resumed from the checkpoint of meta-iteration 9") == 2
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and not any(path.exists() for path in saved)
    source, budget = SinusoidSource(shots=5, query_points=5), config.budget.to_budget(config.seed)
    for trial in done:
        assert trial.params == interrupted[trial.system_attrs["failed_trial"]].params
        alone = evaluate(LearnerSpec.from_dict(trial.user_attrs["spec"]), source, budget)
        assert trial.value == pytest.approx(alone.query_loss, rel=1e-5)
