"""Population runs (``population: P`` in a study file): candidates of one shape trained together.

A population's first trial samples the whole space. The other trials are asked with its shape
parameters fixed (Optuna's ``PartialFixedSampler`` around the study's sampler), so the sampler
chooses only what a population may vary (:data:`~metasearch.evaluation.population.FREE_FIELDS`:
initialization, inner and meta learning rates, outer optimizer). All of them meta-train as one
batched computation (:func:`~metasearch.evaluation.evaluate_population`) and are told their
results through Optuna's ask-and-tell interface. Trials keep heartbeats while they run.

Members train by the one trainer's rules (:func:`~metasearch.evaluation.evaluator.train`), as a
single trial does: each is checkpointed in its trial's folder, and a stop request checkpoints
the members still training, fails them and queues them again. Retried members are asked
together first, so the population forms again and resumes where it stopped.
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
    is_retry,
    numbered,
    objective_values,
    reporter,
    retry,
    start,
    surplus,
    trial_checkpoints,
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
    stop: Callable[[], bool] | None = None,
    checkpoint_every: int = 100,
) -> bool:
    """Asks up to ``size`` trials of one shape, meta-trains them together and tells each its
    result; ``callbacks`` are called after each trial, as Optuna calls them after ``optimize``'s,
    and ``observe`` (with the first trial's number) as they train.
    A trial whose spec is invalid fails alone; the population goes on without it. A trial asked
    when the study already holds ``target`` others (other workers took them) fails untrained.
    With ``files``, members are checkpointed every ``checkpoint_every`` meta-iterations. Where
    ``stop()`` turns true, the members still training are failed and queued again, and this
    returns True (else False)."""
    members: list[tuple[optuna.Trial, LearnerSpec]] = []
    sampler = study.sampler
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    retries = sum(is_retry(trial) for trial in waiting)
    size = min(size, retries) if retries else size  # a stopped population forms again alone
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
                    return False  # the leader's shape is not a valid learner: no population
                continue
            trial.set_user_attr("spec", spec.to_dict())
            members.append((trial, spec))
            if study.sampler is sampler:  # the leader: the others keep its shape
                study.sampler = _keeping_shape(trial.params, sampler)
    finally:
        study.sampler = sampler
    if not members:
        return False
    trials = [trial for trial, _ in members]
    reports = [
        reporter(trial, prune="seed" not in trial.user_attrs) if len(objectives) == 1 else None
        for trial in trials
    ]
    checkpoints = [trial_checkpoints(trial, files, checkpoint_every) for trial in trials]
    with _beating(study, trials):
        try:
            results = evaluate_population(
                [spec for _, spec in members],
                source,
                budget,
                reports=reports,
                checkpoints=checkpoints,
                stop=stop,
                observe=numbered(observe, trials[0].number),
            )
        except Exception as error:  # e.g. a failure outside one candidate's step
            for trial in trials:
                _tell_failure(study, trial, f"{type(error).__name__}: {error}", callbacks)
            return False
    for trial, result, store in zip(trials, results, checkpoints, strict=True):
        if result is None:  # stopped while training: checkpointed, to resume in a retry
            _tell_failure(study, trial, "interrupted; a retry resumes from its checkpoint", [])
            retry(study, trial.number)
            continue
        _tell(study, trial, result, objectives, files, callbacks)
        if store is not None:
            store.clear()
    return None in results


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
