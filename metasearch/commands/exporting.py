"""``metasearch export``: a study's chosen trial as a self-contained learner."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from metasearch.algorithms import get_algorithm
from metasearch.commands.common import load_config, load_existing_study, study_storage
from metasearch.errors import MetasearchError
from metasearch.evaluation import evaluate, held_out_tasks, score
from metasearch.export import export_learner
from metasearch.learners import build_learner
from metasearch.search.results import best_trials
from metasearch.search.storage import redact
from metasearch.search.study import build_source
from metasearch.search.weights import load_trial_weights, weights_dir
from metasearch.spec import LearnerSpec


def export_trial(
    study_file: Path,
    trial: str,
    out: Path,
    storage: str | None,
    data_root: Path | None,
    device: str | None,
    console: Console,
) -> Path:
    """Exports trial ``trial`` ('best' or a number), scored on the meta-test split."""
    config = load_config(study_file)
    storage_url = study_storage(config, storage)
    study = load_existing_study(config, storage_url)
    chosen = _pick_trial(study, trial)
    spec = LearnerSpec.from_dict(chosen.user_attrs["spec"])
    source = build_source(config, data_root, device)
    budget = config.budget.to_budget(config.seed)
    learner = build_learner(
        spec, source.input_shape, source.n_outputs, source.kind, budget.seed, source.device
    )
    weights = load_trial_weights(weights_dir(storage_url, study), chosen)
    if weights is not None:
        learner.load_state_tensors(weights)
    else:
        console.print(f"no stored weights for trial {chosen.number}: meta-training it again")
        result = evaluate(spec, source, budget)
        if result.learner is None:
            raise MetasearchError(f"trial {chosen.number} failed again: {result.reason}")
        learner = result.learner
    test_tasks = held_out_tasks(source, "test", budget.eval_tasks, budget.eval_seed)
    test = score(get_algorithm(spec.outer.algorithm), learner, test_tasks)
    validation = {
        key: chosen.user_attrs.get("result", {}).get(key)
        for key in ("query_loss", "query_loss_ci95", "accuracy", "accuracy_ci95")
    }
    export_learner(
        learner,
        out,
        input_shape=source.input_shape,
        source_description={**source.describe(), "task": config.task.model_dump(mode="json")},
        input_transform=source.input_transform(),
        scores={"validation": validation, "test": asdict(test)},
        provenance={
            "study": config.name,
            "trial": chosen.number,
            "study_file_sha256": config.file_sha256,
            "storage": redact(storage_url),
        },
    )
    accuracy = "" if test.accuracy is None else f", accuracy {test.accuracy:.2%}"
    console.print(
        f"exported trial {chosen.number} to [bold]{out}[/]: meta-test query loss "
        f"{test.loss:.4g} ± {test.loss_ci95:.2g}{accuracy} on {test.n_tasks} unseen tasks"
    )
    return out


def _pick_trial(study, which: str):  # type: ignore[no-untyped-def]
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
