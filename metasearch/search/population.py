"""Population runs (``population: P`` in a study file): candidates of one shape trained together.

A population's first trial samples the whole space. The other trials are asked with its shape
parameters fixed (Optuna's ``PartialFixedSampler`` around the study's sampler), so the sampler
chooses only what a population may vary (:data:`~metasearch.evaluation.population.FREE_FIELDS`:
initialization, inner and meta learning rates, outer optimizer). All of them meta-train as one
batched computation (:func:`~metasearch.evaluation.evaluate_population`) and are told their
results through Optuna's ask-and-tell interface. Trials keep heartbeats while they run; there
are no in-trial checkpoints, so a stop request ends the run after the running population.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from metasearch.evaluation import Budget, EvaluationResult, evaluate_population
from metasearch.evaluation.population import FREE_FIELDS
from metasearch.search.space import SearchSpace
from metasearch.search.suggest import suggest
from metasearch.search.trials import (
    TrialObserver,
    as_trained,
    numbered,
    objective_values,
    reporter,
    start,
    surplus,
)
from metasearch.search.weights import StudyFiles, save_trial_weights
from metasearch.spec import LearnerSpec
from metasearch.tasks import TaskSource

log = logging.getLogger(__name__)
Callback = Callable[[optuna.Study, FrozenTrial], None]


def is_free(param: str) -> bool:
    """Whether the Optuna parameter ``param`` may differ between members of a population."""
    return any(param == field or param.startswith(f"{field}.") for field in FREE_FIELDS)


def run_population(
    study: optuna.Study,
    space: SearchSpace,
    source: TaskSource,
    budget: Budget,
    objectives: Sequence[str],
    size: int,
    target: int,
    files: StudyFiles | None = None,
    callbacks: Iterable[Callback] = (),
    observe: TrialObserver | None = None,
) -> None:
    """Asks up to ``size`` trials of one shape, meta-trains them together and tells each its
    result; ``callbacks`` are called after each trial, as Optuna calls them after ``optimize``'s,
    and ``observe`` (with the first trial's number) as they train.
    A trial whose spec is invalid fails alone; the population goes on without it. A trial asked
    when the study already holds ``target`` others (other workers took them) fails untrained."""
    members: list[tuple[optuna.Trial, LearnerSpec]] = []
    sampler = study.sampler
    try:
        for _ in range(size):
            trial = study.ask()
            start(trial, source.device)
            if surplus(trial, target):
                reason = f"the study already has its {target} trials; nothing was trained"
                _tell_failure(study, trial, reason, callbacks)
                break
            try:
                spec = suggest(trial, space)
            except Exception as error:
                _tell_failure(study, trial, f"{type(error).__name__}: {error}", callbacks)
                if study.sampler is sampler:
                    return  # the leader's shape is not a valid learner: no population
                continue
            trial.set_user_attr("spec", spec.to_dict())
            members.append((trial, spec))
            if study.sampler is sampler:  # the leader: the others keep its shape
                study.sampler = _keeping_shape(trial.params, sampler)
    finally:
        study.sampler = sampler
    if not members:
        return
    trials = [trial for trial, _ in members]
    reports = [
        reporter(trial, prune="seed" not in trial.user_attrs) if len(objectives) == 1 else None
        for trial in trials
    ]
    with _beating(study, trials):
        try:
            results = evaluate_population(
                [spec for _, spec in members],
                source,
                budget,
                reports=reports,
                observe=numbered(observe, trials[0].number),
            )
        except Exception as error:  # e.g. an out-of-memory outside one candidate's step
            for trial in trials:
                _tell_failure(study, trial, f"{type(error).__name__}: {error}", callbacks)
            return
    for trial, result in zip(trials, results, strict=True):
        _tell(study, trial, result, objectives, files, callbacks)


@contextlib.contextmanager
def _beating(study: optuna.Study, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """Records the trials' heartbeats while the block runs, where their storage keeps them, as
    ``study.optimize`` does for its one trial (asked trials get none from Optuna)."""
    storage = trials[0].storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None
    if interval is None:
        yield
        return
    study_id = storage.get_study_id_from_name(study.study_name)
    ids = [storage.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in trials]
    stopped = threading.Event()

    def beat() -> None:
        while True:
            for trial_id in ids:
                storage.record_heartbeat(trial_id)
            if stopped.wait(interval):
                return

    thread = threading.Thread(target=beat, name="heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


def _keeping_shape(
    params: dict[str, object], sampler: optuna.samplers.BaseSampler
) -> optuna.samplers.BaseSampler:
    """``sampler``, with the leader's parameters that a population shares fixed."""
    shape = {name: value for name, value in params.items() if not is_free(name)}
    with warnings.catch_warnings():  # Optuna marks PartialFixedSampler experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler(shape, sampler)


def _tell(
    study: optuna.Study,
    trial: optuna.Trial,
    result: EvaluationResult,
    objectives: Sequence[str],
    files: StudyFiles | None,
    callbacks: Iterable[Callback],
) -> None:
    spec = LearnerSpec.from_dict(trial.user_attrs["spec"])
    trial.set_user_attr("spec", as_trained(spec, result.iterations).to_dict())
    trial.set_user_attr("result", result.to_dict())
    if result.status == "failed":
        _tell_failure(study, trial, result.reason or "failed", callbacks)
        return
    if result.status == "pruned":
        frozen = study.tell(trial, state=TrialState.PRUNED)
    else:
        if files is not None and result.learner is not None:
            save_trial_weights(files, trial, result.learner)
        frozen = study.tell(trial, objective_values(result, objectives))
    for callback in callbacks:
        callback(study, frozen)


def _tell_failure(
    study: optuna.Study, trial: optuna.Trial, reason: str, callbacks: Iterable[Callback]
) -> None:
    log.warning("trial %d failed: %s", trial.number, reason)
    trial.set_user_attr("failure", reason)
    frozen = study.tell(trial, state=TrialState.FAIL)
    for callback in callbacks:
        callback(study, frozen)
