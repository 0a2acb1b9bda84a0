"""``metasearch export``: a study's chosen trial as a self-contained learner."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from metasearch.algorithms import get_algorithm
from metasearch.commands.common import load_config, load_existing_study, study_storage
from metasearch.errors import MetasearchError
from metasearch.evaluation import (
    META_TEST_TASKS,
    Protocol,
    Scores,
    evaluate,
    held_out_tasks,
    score,
)
from metasearch.export import export_learner
from metasearch.export.exporting import EXPORTED_NORMALIZATION, without_unused_rates
from metasearch.learners import Learner, build_learner
from metasearch.search.results import best_trials
from metasearch.search.storage import redact
from metasearch.search.study import StudyConfig, build_source
from metasearch.search.weights import load_trial_weights, study_files
from metasearch.spec import LearnerSpec
from metasearch.tasks import TaskSource


def export_trial(
    study_file: Path,
    trial: str,
    out: Path,
    storage: str | None,
    data_root: Path | None,
    device: str | None,
    console: Console,
) -> Path:
    """Exports trial ``trial`` ('best' or a number), scored by the default meta-test protocol
    (:class:`~metasearch.evaluation.Protocol`) on 600 tasks, or the study's ``eval_tasks``
    where that is more."""
    config = load_config(study_file)
    storage_url = study_storage(config, storage)
    study = load_existing_study(config, storage_url)
    chosen = pick_trial(study, trial)
    spec = LearnerSpec.from_dict(chosen.user_attrs["spec"])
    source = build_source(config, data_root, device)
    budget = config.budget.to_budget(config.seed, config.engine)
    learner = build_learner(
        spec, source.input_shape, source.n_outputs, source.kind, budget.seed, source.device
    )
    weights = load_trial_weights(study_files(storage_url, study, config.artifacts), chosen)
    if weights is not None:
        learner.load_state_tensors(without_unused_rates(weights, learner))
    else:
        console.print(f"no stored weights for trial {chosen.number}: meta-training it again")
        result = evaluate(spec, source, budget)
        if result.learner is None:
            raise MetasearchError(f"trial {chosen.number} failed again: {result.reason}")
        learner = result.learner
    result = chosen.user_attrs.get("result", {})
    export_scored(
        learner,
        config,
        source,
        out,
        label=f"trial {chosen.number}",
        validation={key: result.get(key) for key in VALIDATION_KEYS},
        training={key: result.get(key) for key in TRAINING_KEYS},
        provenance={
            "study": config.name,
            "trial": chosen.number,
            "study_file_sha256": config.file_sha256,
            "storage": redact(storage_url),
        },
        console=console,
    )
    return out


VALIDATION_KEYS = ("query_loss", "query_loss_ci95", "accuracy", "accuracy_ci95")
TRAINING_KEYS = ("iterations", "examples", "meta_train_seconds", "scoring_seconds", "resumed_from")


def export_scored(
    learner: Learner,
    config: StudyConfig,
    source: TaskSource,
    out: Path,
    *,
    label: str,
    validation: dict[str, Any],
    training: dict[str, Any],
    provenance: dict[str, Any],
    console: Console,
) -> Scores:
    """Scores ``learner`` (``label`` names it in the verdict printed) on meta-test tasks the
    search never saw and exports it to ``out`` with its validation scores and what it really
    trained (``training``: iterations, examples, seconds)."""
    budget = config.budget.to_budget(config.seed, config.engine)
    protocol = Protocol(tasks=max(META_TEST_TASKS, budget.eval_tasks), seed=budget.eval_seed)
    test_source = protocol.source(source, "test")
    test_tasks = held_out_tasks(test_source, "test", protocol.tasks, protocol.seed)
    algorithm = get_algorithm(learner.spec.outer.algorithm)
    searched = learner.spec.architecture.normalization_at_prediction
    test = score(algorithm, learner, test_tasks, normalization=EXPORTED_NORMALIZATION)
    search = {
        "space": config.space.name,
        "dimensions": sorted(config.space.dimensions),
        "trials": config.trials,
        "strategy": config.strategy,
    }
    export_learner(
        learner,
        out,
        input_shape=source.input_shape,
        source_description={**source.describe(), "task": config.task.model_dump(mode="json")},
        input_transform=source.input_transform(),
        scores={
            "validation": validation | {"normalization_at_prediction": searched},
            "test": {
                **asdict(test),
                "protocol": protocol.describe(test_source),
                "normalization_at_prediction": EXPORTED_NORMALIZATION,
            },
        },
        provenance={**provenance, "search": search, "training": training},
        normalization=EXPORTED_NORMALIZATION,
    )
    accuracy = "" if test.accuracy is None else f", accuracy {test.accuracy:.2%}"
    accuracy += "" if test.accuracy_ci95 is None else f" ± {test.accuracy_ci95:.2%}"
    iterations = training.get("iterations")
    trained = "" if iterations is None else f" (meta-trained {iterations} iterations)"
    console.print(
        f"exported {escape(label)} to [bold]{escape(str(out))}[/]{trained}: meta-test query loss "
        f"{test.query_loss:.4g} ± {test.query_loss_ci95:.2g}{accuracy} on {test.n_tasks} unseen "
        f"tasks ({EXPORTED_NORMALIZATION} normalization at prediction)"
    )
    console.print(protocol.summary(test_source), markup=False, highlight=False, soft_wrap=True)
    return test


def pick_trial(study, which: str):  # type: ignore[no-untyped-def]
    if which == "best":
        if len(study.directions) > 1:
            raise MetasearchError(
                "this study has several objectives: choose a trial of the Pareto front with "
                "--trial N (see 'metasearch show')"
            )
        best = best_trials(study, 1)
        if not best:
            raise MetasearchError("the study has no completed trial to export yet")
        return best[0]
    if not which.isdigit():
        raise MetasearchError(f"--trial takes 'best' or a trial number, not {which!r}")
    number = int(which)
    matches = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not matches or "spec" not in matches[0].user_attrs:
        raise MetasearchError(f"the study has no trial {number} with a learner spec")
    if matches[0].state.name != "COMPLETE":
        raise MetasearchError(f"trial {number} is {matches[0].state.name.lower()}, not complete")
    return matches[0]
