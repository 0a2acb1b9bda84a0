"""Running a study: open (or resume) it in its storage and evaluate candidates until it is done.

Every trial samples a spec from the study's space and meta-trains it with the one trainer, in
rounds of one trial or of a population (:class:`~metasearch.search.rounds.TrialRound`). A trial
keeps ``spec`` (the learner spec), ``result`` (the evaluation), ``worker`` (host:pid), ``device``
and ``threads`` (torch's CPU threads) as user attributes, and ``failure`` (why) where it failed.
Candidates that diverge or raise become FAILED trials and the study goes on; pruned candidates
become PRUNED trials.

Any number of processes may run the same study at once (workers): each takes one round at a
time and stops when the study holds its number of finished trials, counting the trials others
are running, so that it ends with exactly that many. A trial whose worker died is retried by
another (see :mod:`metasearch.search.storage`) and resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import GrpcStorageProxy, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from metasearch.errors import MetasearchError, SpecError
from metasearch.evaluation import check_compatible
from metasearch.search.recorded import NAME as SPACE_NAME
from metasearch.search.recorded import PREFIX, recorded_space, space_attrs
from metasearch.search.rounds import TrialRound
from metasearch.search.samplers import make_pruner, make_sampler
from metasearch.search.storage import creating, keeps_heartbeats, redact
from metasearch.search.study import DIRECTIONS, StudyConfig, build_source
from metasearch.search.suggest import seed_params
from metasearch.search.trials import ACTIVE, FINISHED, TrialObserver
from metasearch.search.weights import IDENTITY, check_study_name, study_files
from metasearch.spec import ArchitectureSpec, LearnerSpec, OuterLoopSpec
from metasearch.tasks import TaskSource

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
"""How often a worker with nothing to take looks again (others' trials may die and be retried)."""
MAX_FAILURES_IN_A_ROW = 10
"""A run stops after this many failed trials in a row: something is wrong beyond one candidate."""
OPENINGS = "metasearch:openings"
"""The study system attribute counting how often the study was opened (it seeds samplers)."""

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
    (:mod:`metasearch.evaluation.progress`). Where ``stop()`` turns true, the trials still
    training are checkpointed, failed and queued for a retry, and the run returns. ``study``
    is the study already opened by :func:`open_study` in ``storage``, if it was. Raises
    :class:`MetasearchError` where the run stopped short: ``MAX_FAILURES_IN_A_ROW`` failed
    trials in a row, or a :class:`StorageError` where the weights folder cannot be written (a
    full disk); the trials that could not be stored are queued again. Storage errors of the
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
    streak = _FailureStreak(MAX_FAILURES_IN_A_ROW)
    trials = TrialRound(
        space=config.space,
        source=source,
        budget=config.budget.to_budget(config.seed, config.engine),
        objectives=config.objectives,
        target=target,
        population=config.population,
        files=study_files(storage, study, config.artifacts) if isinstance(storage, str) else None,
        darts=config.darts,
        checkpoint_every=config.checkpoint_every or config.budget.eval_every or 100,
        callbacks=(streak, *callbacks),
        observe=observe,
        stop=stop,
    )
    timeout = config.timeout if timeout is None else timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    heartbeats = keeps_heartbeats(storage)
    while not streak.stopped and not (stop is not None and stop()):
        if deadline is not None and time.monotonic() > deadline:
            break
        if _count(study, FINISHED) >= target:
            break
        if heartbeats:
            _fail_stale_trials(study)  # queues again the trials of workers that died
        if _count(study, ACTIVE) >= target and not _count(study, (TrialState.WAITING,)):
            if not heartbeats:
                break  # the rest is running elsewhere, and nothing would notice if it died
            time.sleep(POLL_SECONDS)  # the rest is running elsewhere: take it over if it dies
            continue
        if trials.run(study):
            break  # stopped: the trials still training are queued again
    if streak.stopped:
        raise MetasearchError(streak.reason)
    return study


def _count(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


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
