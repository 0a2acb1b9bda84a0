"""What a trial's run needs: trial states, who runs it (and on what), whether it is one too many,
the spec as trained, pruning reports, progress, objective values, its checkpoints, its
heartbeats and its retry after an interruption."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import optuna
import torch
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from metasearch.evaluation import CheckpointStore, EvaluationResult, Observer, TrainingProgress
from metasearch.search.weights import StudyFiles
from metasearch.spec import LearnerSpec

RETRIED = "failed_trial"
"""The system attribute naming the trial a retry repeats (Optuna's retry callback sets it)."""

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ACTIVE = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)

TrialObserver = Callable[[int, TrainingProgress], None]
"""Told a trial's number and its progress as it trains (a population's: its first trial's)."""


def worker_name() -> str:
    """This process, as ``host:pid``: a trial's ``worker`` attribute (asked at each call, so
    that forked processes name themselves)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def start(trial: optuna.Trial, device: torch.device) -> None:
    """Marks ``trial`` as this worker's, on ``device`` with torch's present number of CPU
    threads, with no failure yet (a retry inherits its failed original's attributes)."""
    trial.set_user_attr("failure", None)
    trial.set_user_attr("worker", worker_name())
    trial.set_user_attr("device", str(device))
    trial.set_user_attr("threads", torch.get_num_threads())


def surplus(trial: optuna.Trial, target: int) -> bool:
    """Whether ``target`` other trials were active before ``trial``: other workers took the
    study's last ones at the same moment."""
    earlier = trial.study.get_trials(deepcopy=False, states=ACTIVE)
    return sum(t.number < trial.number for t in earlier) >= target


def as_trained(spec: LearnerSpec, iterations: int) -> LearnerSpec:
    """``spec`` with the meta-iterations it really trained, so the spec records what ran."""
    outer = spec.outer.model_copy(update={"iterations": max(iterations, 1)})
    return spec.model_copy(update={"outer": outer})


def numbered(observe: TrialObserver | None, number: int) -> Observer | None:
    """The evaluator's ``observe`` for trial ``number``."""
    return None if observe is None else functools.partial(observe, number)


def reporter(trial: optuna.Trial, prune: bool = True) -> Callable[[int, float], bool]:
    """The evaluator's ``report``: intermediate validation losses go to the trial's pruner,
    which may stop the trial where ``prune`` (a study's seeds are never stopped)."""

    def report(step: int, validation_loss: float) -> bool:
        trial.report(validation_loss, step)
        return prune and trial.should_prune()

    return report


def objective_values(
    result: EvaluationResult | Mapping[str, Any], objectives: Sequence[str]
) -> list[float]:
    """The study's objectives read off ``result`` or its stored record (NaN where it has
    none)."""
    if isinstance(result, Mapping):
        values = [result.get(name) for name in objectives]
    else:
        values = [getattr(result, name) for name in objectives]
    return [math.nan if value is None else float(value) for value in values]


def trial_checkpoints(
    trial: optuna.Trial, files: StudyFiles | None, every: int
) -> CheckpointStore | None:
    """The trial's checkpoints (none without a study folder), shared with the trial it retries
    (if any), saved every ``every`` meta-iterations."""
    if files is None:
        return None
    number = stored(trial).system_attrs.get(RETRIED, trial.number)
    return CheckpointStore(files.checkpoints / f"trial-{number}", every)


def stored(trial: optuna.Trial) -> FrozenTrial:
    """``trial`` as its storage holds it, with the system attributes (the trial a retry repeats)
    and the attributes inherited from that trial, which an asked trial does not expose."""
    return trial.study._storage.get_trial(trial._trial_id)


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queues ``trial`` (failed by an interruption) again, to resume from its checkpoint."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        again = RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)
    again(study, trial)


def is_retry(trial: FrozenTrial) -> bool:
    """Whether ``trial`` retries one that an interruption or a dead worker ended."""
    return RETRIED in trial.system_attrs


@contextlib.contextmanager
def beating(study: optuna.Study, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """Records the trials' heartbeats while the block runs, where their storage keeps them
    (Optuna keeps them only inside ``study.optimize``, never for asked trials)."""
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
