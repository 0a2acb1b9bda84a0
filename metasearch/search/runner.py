"""Running a study: open (or resume) it in its storage and evaluate candidates until it is done.

Every trial samples a spec from the study's space and meta-trains it with the evaluator. A trial
keeps ``spec`` (the learner spec), ``result`` (the evaluation), ``worker`` (host:pid), ``device``
and ``threads`` (torch's CPU threads) as user attributes, and ``failure`` (why) where it failed.
Candidates that diverge or raise become FAILED trials and the study goes on; pruned candidates
become PRUNED trials.

Any number of processes may run the same study at once (workers): each takes one trial at a
time and stops when the study holds its number of finished trials, counting the trials others
are running, so that it ends with exactly that many. A trial whose worker died is retried by
another (see :mod:`metasearch.search.storage`) and resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from metasearch.darts import genotype_spec, search_architecture
from metasearch.errors import MetasearchError, SpecError, StorageError
from metasearch.evaluation import (
    TrainingInterrupted,
    check_compatible,
    evaluate,
)
from metasearch.search.population import run_population
from metasearch.search.recorded import NAME as SPACE_NAME
from metasearch.search.recorded import PREFIX, recorded_space, space_attrs
from metasearch.search.results import HISTORY_ATTR
from metasearch.search.samplers import make_pruner, make_sampler
from metasearch.search.storage import FULL, creating, keeps_heartbeats, redact, unwritable
from metasearch.search.study import DIRECTIONS, StudyConfig, build_source
from metasearch.search.suggest import seed_params, suggest
from metasearch.search.trials import (
    ACTIVE,
    FINISHED,
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
from metasearch.search.weights import (
    IDENTITY,
    StudyFiles,
    check_study_name,
    load_trial_weights,
    save_trial_weights,
    study_files,
)
from metasearch.spec import ArchitectureSpec, LearnerSpec, OuterLoopSpec
from metasearch.tasks import TaskSource

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""How often a worker with nothing to take looks again (others' trials may die and be retried)."""
MAX_FAILURES_IN_A_ROW = 10
"""A run stops after this many failed trials in a row: something is wrong beyond one candidate."""
OPENINGS = "metasearch:openings"
"""The study system attribute counting how often the study was opened (it seeds samplers)."""

SEARCH_FOLDER = "search"
"""The sub-folder of a trial's checkpoints that holds its differentiable search's."""

Storage = str | optuna.storages.BaseStorage | None
Callback = Callable[[optuna.Study, FrozenTrial], None]


def open_study(config: StudyConfig, storage: Storage = None) -> optuna.Study:
    """Creates the study ``config.name`` in ``storage`` (default: the config's; in memory where
    neither names one), or loads it to resume, under the storage's creation lock (so that
    workers starting together on a fresh storage neither race nor see a half-made study).

    A new study records the study file's SHA-256, the search space (one line per dimension,
    :mod:`metasearch.search.recorded`), the task, the budget, the objectives and a UUID
    (:mod:`metasearch.search.weights`) in its user attributes, and names its objectives as
    Optuna's metric names (so that the dashboard shows ``query_loss``, not "Objective 0"). Each
    opening of a study seeds its sampler with the study's seed plus the number of openings
    before it (kept in the study's system attributes): a single run is reproducible, a resumed
    one does not propose its first trials again, and processes joining together explore
    different candidates. Raises :class:`SpecError` where an existing study was created with a
    different space, task, budget or objectives: its trials would not compare.
    """
    check_study_name(config.name)
    storage = storage if storage is not None else config.storage
    with _backend(storage, config) as backend:
        silent = {JournalStorage: "journal storage", GrpcStorageProxy: "the storage proxy"}
        for kind, what in silent.items():
            if isinstance(backend, kind):
                log.warning(
                    "%s keeps no heartbeats: trials of a worker that dies stay RUNNING", what
                )
        openings = _openings(backend, config.name)
        study = optuna.create_study(
            storage=backend,
            study_name=config.name,
            directions=[DIRECTIONS[o] for o in config.objectives],
            sampler=make_sampler(config, seed_offset=openings or 0),
            pruner=make_pruner(config),
            load_if_exists=True,
        )
        if openings is None:
            for key, value in (_protocol(config) | space_attrs(config.space)).items():
                study.set_user_attr(key, value)
            study.set_user_attr("study_file_sha256", config.file_sha256)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(config.objectives))
            enqueue_seeds(study, config)
        else:
            _check_unchanged(study, config, storage)
        if IDENTITY not in study.user_attrs:  # new, or from before studies had one
            study.set_user_attr(IDENTITY, uuid.uuid4().hex)
        study_id = backend.get_study_id_from_name(config.name)
        backend.set_study_system_attr(study_id, OPENINGS, (openings or 0) + 1)
    return study


def enqueue_seeds(study: optuna.Study, config: StudyConfig) -> None:
    """Queues the study file's seeds as the first trials, each marked with its name."""
    for seed in config.seeds:
        study.enqueue_trial(
            seed_params(config.space, seed.params),
            user_attrs={"seed": seed.name},
            skip_if_exists=True,
        )


def run_study(
    config: StudyConfig,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    storage: Storage = None,
    data_root: str | Path | None = None,
    callbacks: Iterable[Callback] = (),
    device: str | None = None,
    source: TaskSource | None = None,
    stop: Callable[[], bool] | None = None,
    study: optuna.Study | None = None,
    observe: TrialObserver | None = None,
) -> optuna.Study:
    """Runs the study until it holds ``n_trials`` (default ``config.trials``) finished (complete
    or pruned) trials in all, or ``timeout`` seconds (default ``config.timeout``) have passed.

    Running it again after an interruption tops it up to the total instead of starting over;
    other workers may run it at the same time. The task source is built once (see
    :func:`build_source`) unless ``source`` is given. With a storage URL, the meta-learned
    weights of complete trials are kept, and running trials are checkpointed
    (:mod:`metasearch.search.weights`). ``callbacks`` are Optuna study callbacks, called after
    each trial; ``observe`` is told the running trial's number and progress as it trains
    (:mod:`metasearch.evaluation.progress`). Where ``stop()`` turns true, the running trial is
    checkpointed, failed and queued for a retry, and the run returns. ``study`` is the study
    already opened by :func:`open_study` in ``storage``, if it was. Raises
    :class:`MetasearchError` where the run stopped short: ``MAX_FAILURES_IN_A_ROW`` failed
    trials in a row, or a :class:`StorageError` where the weights folder cannot be written (a
    full disk); the trial that could not be stored is queued again. Storage errors of the
    database itself are Optuna's (:func:`metasearch.search.storage.writing` says them in one
    line).
    """
    storage = storage if storage is not None else config.storage
    study = study if study is not None else open_study(config, storage)
    target = config.trials if n_trials is None else n_trials
    if _count(study, FINISHED) >= target:
        return study
    source = source if source is not None else build_source(config, data_root, device)
    _check_fits(config, source)
    files = study_files(storage, study, config.artifacts) if isinstance(storage, str) else None
    objective = _Objective(config, source, files, target, stop, observe)
    streak = _FailureStreak(MAX_FAILURES_IN_A_ROW)
    timeout = config.timeout if timeout is None else timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    heartbeats = keeps_heartbeats(storage)
    while not streak.stopped and not (stop is not None and stop()):
        if deadline is not None and time.monotonic() > deadline:
            break
        if _count(study, FINISHED) >= target:
            break
        if _count(study, ACTIVE) >= target and not _count(study, (TrialState.WAITING,)):
            if not heartbeats:
                break  # the rest is running elsewhere, and nothing would notice if it died
            _fail_stale_trials(study)  # the rest is running elsewhere: take it over if it dies
            time.sleep(POLL_SECONDS)
            continue
        if config.population > 1:
            taken = _count(study, (*FINISHED, TrialState.RUNNING))  # the waiting are asked first
            size = min(config.population, target - taken)
            space, budget = config.space, objective.budget
            stopped = run_population(
                study,
                space,
                source,
                budget,
                config.objectives,
                size,
                target,
                files,
                [streak, *callbacks],
                observe,
                stop,
                objective.checkpoint_every,
            )
            if stopped:
                break
            continue
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[streak, *callbacks])
        if objective.interrupted is not None:
            retry(study, objective.interrupted)
            if objective.unwritable is not None:
                raise StorageError(objective.unwritable)
            break
    if streak.stopped:
        raise MetasearchError(streak.reason)
    return study


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _Surplus(Exception):
    """Another worker took the study's last trial at the same moment as this one."""


class _Objective:
    """One trial: sample a spec, meta-train and score it, return the objectives."""

    def __init__(
        self,
        config: StudyConfig,
        source: TaskSource,
        files: StudyFiles | None,
        target: int,
        stop: Callable[[], bool] | None,
        observe: TrialObserver | None = None,
    ) -> None:
        self.space, self.source, self.objectives = config.space, source, config.objectives
        self.multi_objective = config.multi_objective
        self.budget = config.budget.to_budget(config.seed, config.engine)
        self.darts = config.darts
        self.files, self.target, self.stop, self.observe = files, target, stop, observe
        self.checkpoint_every = config.checkpoint_every or config.budget.eval_every or 100
        self.interrupted: int | None = None
        self.unwritable: str | None = None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        start(trial, self.source.device)
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except TrainingInterrupted as error:
            self.interrupted = trial.number
            trial.set_user_attr("failure", f"{error}; a retry resumes from its checkpoint")
            raise
        except Exception as error:  # Optuna logs it and fails the trial; the study goes on
            if isinstance(error, OSError) and error.errno in FULL:  # nothing more can be stored:
                self.interrupted = trial.number  # the trial is queued again and the run stops
                self.unwritable = unwritable(error, self.files)
                reason = f"{self.unwritable}; a retry resumes from its checkpoint"
            else:
                reason = f"{type(error).__name__}: {error}"
            trial.set_user_attr("failure", reason)
            raise

    def _evaluate(self, trial: optuna.Trial) -> list[float]:
        if surplus(trial, self.target):
            raise _Surplus(f"the study already has its {self.target} trials; nothing was trained")
        spec = suggest(trial, self.space)
        stored = self._stored_result(trial)
        if stored is not None:  # a retry of a trial killed after it stored its outcome
            return self._outcome(trial, stored)
        checkpoints = trial_checkpoints(trial, self.files, self.checkpoint_every)
        if self.darts is not None:  # strategy darts: the architecture by differentiable search
            found = search_architecture(
                spec,
                self.source,
                self.darts,
                self.budget.seed,
                checkpoints=None if checkpoints is None else checkpoints.within(SEARCH_FOLDER),
                stop=self.stop,
                observe=numbered(self.observe, trial.number),
            )
            if found.genotype is None:  # failed or pruned: nothing to evaluate
                record = {"status": found.status, "reason": found.reason}
                trial.set_user_attr("result", record)
                if checkpoints is not None:
                    checkpoints.clear()
                return self._outcome(trial, record)
            trial.set_user_attr(HISTORY_ATTR, found.history)
            spec = genotype_spec(spec, found.genotype, self.darts.channels)
        trial.set_user_attr("spec", spec.to_dict())
        seed = trial.user_attrs.get("seed")
        report = None if self.multi_objective else reporter(trial, prune=seed is None)
        result = evaluate(
            spec,
            self.source,
            self.budget,
            report=report,
            checkpoints=checkpoints,
            stop=self.stop,
            observe=numbered(self.observe, trial.number),
        )
        trial.set_user_attr("spec", as_trained(spec, result.iterations).to_dict())
        if result.status == "complete" and self.files is not None and result.learner is not None:
            save_trial_weights(self.files, trial, result.learner)  # before the trial is done
        record = result.to_dict()
        trial.set_user_attr("result", record)
        if checkpoints is not None:
            checkpoints.clear()
        return self._outcome(trial, record)

    def _outcome(self, trial: optuna.Trial, record: dict[str, Any]) -> list[float]:
        """The objectives of a stored evaluation ``record``; raises where it was pruned."""
        if record["status"] == "failed":
            log.warning("trial %d failed: %s", trial.number, record["reason"])
            trial.set_user_attr("failure", record["reason"])
            return [math.nan] * len(self.objectives)  # Optuna marks the trial FAILED
        if record["status"] == "pruned":
            raise optuna.TrialPruned(record["reason"])
        return objective_values(record, self.objectives)

    def _stored_result(self, trial: optuna.Trial) -> dict[str, Any] | None:
        """The evaluation that the trial this one retries stored in full (result and, where
        weights are kept, the weights it names), if it did."""
        frozen = trial.study._storage.get_trial(trial._trial_id)
        record = frozen.user_attrs.get("result")
        if record is None or not is_retry(frozen):
            return None
        kept = self.files is None or record["status"] != "complete"
        return record if kept or load_trial_weights(self.files, frozen) is not None else None


class _FailureStreak:
    """Stops the run after ``limit`` failed trials in a row; ``reason`` says why."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count, self.stopped, self.reason = limit, 0, False, ""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.count = self.count + 1 if trial.state == TrialState.FAIL else 0
        if self.count >= self.limit and not self.stopped:
            self.stopped = True
            self.reason = (
                f"stopped: the last {self.count} trials failed (last: "
                f"{trial.user_attrs.get('failure') or 'see the log'}); check the search space, "
                "budget and device"
            )


def _backend(
    storage: Storage, config: StudyConfig
) -> contextlib.AbstractContextManager[optuna.storages.BaseStorage]:
    """The storage to create or load the study in, held under its creation lock."""
    if storage is None:
        return contextlib.nullcontext(optuna.storages.InMemoryStorage())
    if not isinstance(storage, str):
        return contextlib.nullcontext(storage)
    return creating(storage, config.heartbeat.interval, config.heartbeat.grace_period)


def _openings(storage: optuna.storages.BaseStorage, name: str) -> int | None:
    """How often the study ``name`` was opened before, or None where it does not exist."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return int(storage.get_study_system_attrs(study_id).get(OPENINGS, 0))


def _protocol(config: StudyConfig) -> dict[str, Any]:
    """What makes trial values comparable, as the JSON that storages keep."""
    protocol = {
        "task": config.task.model_dump(mode="json"),
        "budget": config.budget.model_dump(mode="json"),
        "objectives": list(config.objectives),
        "strategy": config.strategy,
        "darts": config.darts.model_dump(mode="json") if config.darts else None,
    }
    return json.loads(json.dumps(protocol))


def _check_unchanged(study: optuna.Study, config: StudyConfig, storage: Storage) -> None:
    where = redact(storage) if isinstance(storage, str) else "its storage"
    recorded = study.user_attrs
    space = recorded_space(recorded)
    if space is None:
        raise SpecError(
            f"study {config.name!r} in {where} was not created by metasearch; "
            "give the study another name"
        )
    changed = _changes(space, recorded, config)
    if changed:
        raise SpecError(
            f"study {config.name!r} in {where} was created with a different "
            f"{', '.join(changed)}, so its trials would not compare with new ones; rename the "
            "study (name:) to start a new one, or restore the original settings to resume it"
        )


def _changes(space: dict[str, str], recorded: dict[str, Any], config: StudyConfig) -> list[str]:
    old, new, current = space, space_attrs(config.space), _protocol(config)
    parts = sorted((old.keys() | new.keys()) - {SPACE_NAME})  # a renamed space is the same one
    changed = [f"search space {k.removeprefix(PREFIX)}" for k in parts if old.get(k) != new.get(k)]
    recorded = {"strategy": "blackbox", "darts": None} | recorded  # studies from before DARTS
    if isinstance(recorded["darts"], dict):  # from before the search had a time limit
        recorded["darts"] = {"time_limit": None} | recorded["darts"]
    sections = ("task", "budget", "objectives", "strategy", "darts")
    return changed + [k for k in sections if recorded.get(k) != current[k]]


def _check_fits(config: StudyConfig, source: TaskSource) -> None:
    """Refuses a space that can sample a family or algorithm the task source cannot take."""
    space = config.space
    for family in space.values_of("architecture.family"):
        for algorithm in space.values_of("outer.algorithm"):
            probe = LearnerSpec.model_construct(
                architecture=ArchitectureSpec.model_construct(family=family),
                outer=OuterLoopSpec.model_construct(algorithm=algorithm),
            )
            try:
                check_compatible(probe, source)
            except SpecError as error:
                raise SpecError(
                    f"study {config.name!r}: {error} (the search space {space.name!r} can "
                    f"sample architecture.family {family} with outer.algorithm {algorithm}; "
                    "remove that choice or choose another task)"
                ) from None
