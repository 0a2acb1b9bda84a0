"""Running a study: open (or resume) it in its storage and evaluate candidates until it is done.

Every trial samples a spec from the study's space and meta-trains it with the evaluator. A trial
keeps ``spec`` (the learner spec) and ``result`` (the evaluation) as user attributes, and
``failure`` (why) where it failed. Candidates that diverge or raise become FAILED trials and the
study goes on; pruned candidates become PRUNED trials.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from metasearch.errors import SpecError
from metasearch.evaluation import EvaluationResult, check_compatible, evaluate
from metasearch.search.samplers import make_pruner, make_sampler
from metasearch.search.study import DIRECTIONS, StudyConfig, build_source, redact
from metasearch.search.suggest import suggest
from metasearch.search.weights import save_trial_weights, weights_dir
from metasearch.spec import ArchitectureSpec, LearnerSpec, OuterLoopSpec
from metasearch.tasks import TaskSource

log = logging.getLogger(__name__)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_FAILURES_IN_A_ROW = 10
"""A run stops after this many failed trials in a row: something is wrong beyond one candidate."""

Storage = str | optuna.storages.BaseStorage | None
Callback = Callable[[optuna.Study, FrozenTrial], None]


def open_study(config: StudyConfig, storage: Storage = None) -> optuna.Study:
    """Creates the study ``config.name`` in ``storage`` (default: the config's; in memory where
    neither names one), or loads it to resume.

    A new study records the study file's SHA-256, the search space, the task, the budget and the
    objectives in its user attributes. Raises :class:`SpecError` where an existing study was
    created with a different space, task, budget or objectives: its trials would not compare.
    """
    storage = storage if storage is not None else config.storage
    backend = _backend(storage)
    previous = _n_trials(backend, config.name)
    study = optuna.create_study(
        storage=backend,
        study_name=config.name,
        directions=[DIRECTIONS[o] for o in config.objectives],
        # Reseeded on resume, or a seeded sampler would propose the first trials again.
        sampler=make_sampler(config, seed_offset=previous or 0),
        pruner=make_pruner(config),
        load_if_exists=True,
    )
    if previous is None:
        for key, value in _protocol(config).items():
            study.set_user_attr(key, value)
        study.set_user_attr("study_file_sha256", config.file_sha256)
    else:
        _check_unchanged(study, config, storage)
    return study


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
) -> optuna.Study:
    """Runs the study until it holds ``n_trials`` (default ``config.trials``) finished (complete
    or pruned) trials in all, or ``timeout`` seconds (default ``config.timeout``) have passed.

    Running it again after an interruption tops it up to the total instead of starting over.
    The task source is built once (see :func:`build_source`) unless ``source`` is given. With a
    storage URL, the
    meta-learned weights of complete trials are kept (:mod:`metasearch.search.weights`).
    ``callbacks`` are Optuna study callbacks, called after each trial.
    """
    storage = storage if storage is not None else config.storage
    study = open_study(config, storage)
    target = config.trials if n_trials is None else n_trials
    if len(study.get_trials(deepcopy=False, states=FINISHED)) >= target:
        return study
    source = source if source is not None else build_source(config, data_root, device)
    _check_fits(config, source)
    weights = weights_dir(storage, config.name) if isinstance(storage, str) else None
    study.optimize(
        _Objective(config, source, weights),
        timeout=config.timeout if timeout is None else timeout,
        catch=(Exception,),
        callbacks=[
            optuna.study.MaxTrialsCallback(target, states=FINISHED),
            _FailureStreak(MAX_FAILURES_IN_A_ROW),
            *callbacks,
        ],
    )
    return study


class _Objective:
    """One trial: sample a spec, meta-train and score it, return the objectives."""

    def __init__(self, config: StudyConfig, source: TaskSource, weights: Path | None) -> None:
        self.space, self.source, self.objectives = config.space, source, config.objectives
        self.multi_objective = config.multi_objective
        self.budget = config.budget.to_budget(config.seed)
        self.weights = weights

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:  # Optuna logs it and fails the trial; the study goes on
            trial.set_user_attr("failure", f"{type(error).__name__}: {error}")
            raise

    def _evaluate(self, trial: optuna.Trial) -> list[float]:
        spec = suggest(trial, self.space)
        if self.budget.iterations is not None:  # the spec records what was really trained
            outer = spec.outer.model_copy(update={"iterations": self.budget.iterations})
            spec = spec.model_copy(update={"outer": outer})
        trial.set_user_attr("spec", spec.to_dict())
        report = None if self.multi_objective else _reporter(trial)
        result = evaluate(spec, self.source, self.budget, report=report)
        trial.set_user_attr("result", result.to_dict())
        if result.status == "failed":
            log.warning("trial %d failed: %s", trial.number, result.reason)
            trial.set_user_attr("failure", result.reason)
            return [math.nan] * len(self.objectives)  # Optuna marks the trial FAILED
        if result.status == "pruned":
            raise optuna.TrialPruned(result.reason)
        if self.weights is not None and result.learner is not None:
            save_trial_weights(self.weights, trial, result.learner)
        return [_objective_value(result, name) for name in self.objectives]


def _reporter(trial: optuna.Trial) -> Callable[[int, float], bool]:
    def report(iteration: int, validation_loss: float) -> bool:
        trial.report(validation_loss, iteration)
        return trial.should_prune()

    return report


def _objective_value(result: EvaluationResult, name: str) -> float:
    value = getattr(result, name)
    return math.nan if value is None else float(value)


class _FailureStreak:
    """Stops the study after ``limit`` failed trials in a row."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.count = self.count + 1 if trial.state == TrialState.FAIL else 0
        if self.count >= self.limit:
            log.error(
                "stopping: the last %d trials failed (last: %s); check the search space, "
                "budget and device",
                self.count,
                trial.user_attrs.get("failure", "see the log"),
            )
            study.stop()


def _backend(storage: Storage) -> optuna.storages.BaseStorage:
    if storage is None:
        return optuna.storages.InMemoryStorage()
    if not isinstance(storage, str):
        return storage
    try:
        return optuna.storages.RDBStorage(storage)
    except Exception as error:  # SQLAlchemy's errors for bad URLs and unreachable databases
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise SpecError(f"cannot open the study storage {redact(storage)}: {reason}") from None


def _n_trials(storage: optuna.storages.BaseStorage, name: str) -> int | None:
    """How many trials the study ``name`` holds, or None where it does not exist."""
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(name))
    except KeyError:
        return None


def _protocol(config: StudyConfig) -> dict[str, Any]:
    """What makes trial values comparable, as the JSON that storages keep."""
    protocol = {
        "search_space": config.space.model_dump(mode="json", by_alias=True),
        "task": config.task.model_dump(mode="json"),
        "budget": config.budget.model_dump(mode="json"),
        "objectives": list(config.objectives),
    }
    return json.loads(json.dumps(protocol))


def _check_unchanged(study: optuna.Study, config: StudyConfig, storage: Storage) -> None:
    where = redact(storage) if isinstance(storage, str) else "its storage"
    recorded = study.user_attrs
    if "search_space" not in recorded:
        raise SpecError(
            f"study {config.name!r} in {where} was not created by metasearch; "
            "give the study another name"
        )
    changed = _changes(recorded, _protocol(config))
    if changed:
        raise SpecError(
            f"study {config.name!r} in {where} was created with a different "
            f"{', '.join(changed)}, so its trials would not compare with new ones; rename the "
            "study (name:) to start a new one, or restore the original settings to resume it"
        )


def _changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    changed = []
    for section in ("fixed", "derived", "dimensions"):
        old = recorded["search_space"].get(section, {})
        new = current["search_space"][section]
        keys = sorted(old.keys() | new.keys())
        changed += [f"search space {section}.{k}" for k in keys if old.get(k) != new.get(k)]
    return changed + [k for k in ("task", "budget", "objectives") if recorded.get(k) != current[k]]


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
