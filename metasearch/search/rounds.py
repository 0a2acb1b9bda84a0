"""The one trial runner: a round of trials asked, meta-trained together and told their results.

A round is one trial (``population: 1``, the default) or a population of one shape
(:mod:`metasearch.search.population`), through Optuna's ask-and-tell interface. Each asked
trial is marked as this worker's, checked against the study's target and given its spec from
the space. A retry of a trial that stored its outcome before its worker died is told that
outcome without training again; with ``strategy: darts`` a trial's architecture is searched
first. The rest meta-train together through the one trainer
(:func:`~metasearch.evaluation.evaluate_population`), keeping their heartbeats and each
checkpointed in its trial's folder, and each is told its result: complete (its weights kept
first), pruned or failed. A failing trial never ends the study. A stop request checkpoints the
trials still training, fails them and queues them again; so does a full disk, which then raises
:class:`~metasearch.errors.StorageError`.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from metasearch.darts import DartsConfig, genotype_spec, search_architecture
from metasearch.errors import StorageError
from metasearch.evaluation import Budget, TrainingInterrupted, evaluate_population
from metasearch.search.population import keeping_shape
from metasearch.search.results import HISTORY_ATTR
from metasearch.search.space import SearchSpace
from metasearch.search.storage import FULL, unwritable
from metasearch.search.suggest import suggest
from metasearch.search.trials import (
    FINISHED,
    TrialObserver,
    as_trained,
    beating,
    is_retry,
    numbered,
    objective_values,
    reporter,
    retry,
    start,
    stored,
    surplus,
    trial_checkpoints,
)
from metasearch.search.weights import StudyFiles, load_trial_weights, save_trial_weights
from metasearch.spec import LearnerSpec
from metasearch.tasks import TaskSource

log = logging.getLogger(__name__)

SEARCH_FOLDER = "search"
"""The sub-folder of a trial's checkpoints that holds its differentiable search's."""

Callback = Callable[[optuna.Study, FrozenTrial], None]


@dataclass(frozen=True)
class TrialRound:
    """What every round of a study shares: the space and task source, the budget, the
    objectives, the study's ``target`` number of finished trials, the ``population`` size, the
    study's files (checkpoints every ``checkpoint_every`` meta-iterations, weights; none in
    memory), the differentiable search's settings (``strategy: darts``), ``callbacks`` called
    after each trial as Optuna calls ``optimize``'s, ``observe`` told the first trial's
    progress, and ``stop``."""

    space: SearchSpace
    source: TaskSource
    budget: Budget
    objectives: Sequence[str]
    target: int
    population: int = 1
    files: StudyFiles | None = None
    darts: DartsConfig | None = None
    checkpoint_every: int = 100
    callbacks: Sequence[Callback] = ()
    observe: TrialObserver | None = None
    stop: Callable[[], bool] | None = None

    def run(self, study: optuna.Study) -> bool:
        """Asks the round's trials, meta-trains them together and tells each its result; True
        where a stop request interrupted them. Raises :class:`StorageError` where a full disk
        stopped them."""
        asked = self._ask(study)
        if not asked:
            return False
        with beating(study, [trial for trial, _ in asked]):
            try:
                members = [(trial, self._prepare(study, trial, spec)) for trial, spec in asked]
                training = [(trial, spec) for trial, spec in members if spec is not None]
                return bool(training) and self._train(study, training)
            except TrainingInterrupted as error:
                self._queue_again(study, asked, str(error))
                return True
            except KeyboardInterrupt:  # past the graceful stop: from the last checkpoint
                self._queue_again(study, asked, "interrupted")
                raise
            except Exception as error:
                if isinstance(error, OSError) and error.errno in FULL:
                    reason = unwritable(error, self.files)  # nothing more can be stored
                    self._queue_again(study, asked, reason)
                    raise StorageError(reason) from None
                for trial in _running(study, asked):  # e.g. a failure outside one candidate
                    self._fail(study, trial, f"{type(error).__name__}: {error}")
                return False

    def _ask(self, study: optuna.Study) -> list[tuple[optuna.Trial, LearnerSpec]]:
        """Asks the round's trials, each with its spec; the first sets the shape of the rest."""
        size = self._size(study)
        sampler, asked = study.sampler, []
        try:
            for _ in range(size):
                with warnings.catch_warnings():  # heartbeats are kept by `beating`
                    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
                    trial = study.ask()
                start(trial, self.source.device)
                if surplus(trial, self.target):
                    reason = f"the study already has its {self.target} trials; nothing was trained"
                    self._fail(study, trial, reason)
                    break
                try:
                    spec = suggest(trial, self.space)
                except Exception as error:
                    self._fail(study, trial, f"{type(error).__name__}: {error}")
                    if not asked:
                        return []  # the first trial's shape is not a valid learner: no round
                    continue
                trial.set_user_attr("spec", spec.to_dict())
                asked.append((trial, spec))
                if len(asked) == 1 and size > 1:  # the others keep its shape
                    study.sampler = keeping_shape(trial.params, sampler)
        finally:
            study.sampler = sampler
        return asked

    def _size(self, study: optuna.Study) -> int:
        """How many trials the round asks: the population, or fewer where the study needs
        fewer (never none: a trial one too many fails as such), or the retried trials alone (a
        stopped population forms again without new members)."""
        trials = study.get_trials(deepcopy=False)
        taken = sum(t.state in (*FINISHED, TrialState.RUNNING) for t in trials)
        retries = sum(t.state == TrialState.WAITING and is_retry(t) for t in trials)
        size = max(1, min(self.population, self.target - taken))
        return min(size, retries) if retries else size

    def _prepare(
        self, study: optuna.Study, trial: optuna.Trial, spec: LearnerSpec
    ) -> LearnerSpec | None:
        """The spec that ``trial`` meta-trains, or None where it was told its outcome already:
        a retry of a trial that stored its outcome, or a differentiable search that ended
        without an architecture."""
        stored = self._stored_result(trial)
        if stored is not None:
            self._tell(study, trial, stored)
            return None
        if self.darts is None:
            return spec
        checkpoints = trial_checkpoints(trial, self.files, self.checkpoint_every)
        found = search_architecture(
            spec,
            self.source,
            self.darts,
            self.budget.seed,
            checkpoints=None if checkpoints is None else checkpoints.within(SEARCH_FOLDER),
            stop=self.stop,
            observe=numbered(self.observe, trial.number),
        )
        if found.genotype is None:  # failed or pruned: nothing to meta-train
            record = {"status": found.status, "reason": found.reason}
            trial.set_user_attr("result", record)
            if checkpoints is not None:
                checkpoints.clear()
            self._tell(study, trial, record)
            return None
        trial.set_user_attr(HISTORY_ATTR, found.history)
        spec = genotype_spec(spec, found.genotype, self.darts.channels)
        trial.set_user_attr("spec", spec.to_dict())
        return spec

    def _train(self, study: optuna.Study, members: list[tuple[optuna.Trial, LearnerSpec]]) -> bool:
        """Meta-trains ``members`` together and tells each its result; True where a stop
        request interrupted the ones still training (they are queued again)."""
        trials = [trial for trial, _ in members]
        pruned = len(self.objectives) == 1  # a multi-objective study has no pruner to report to
        reports = [reporter(t, "seed" not in t.user_attrs) if pruned else None for t in trials]
        stores = [trial_checkpoints(trial, self.files, self.checkpoint_every) for trial in trials]
        results = evaluate_population(
            [spec for _, spec in members],
            self.source,
            self.budget,
            reports=reports,
            checkpoints=stores,
            stop=self.stop,
            observe=numbered(self.observe, trials[0].number),
        )
        interrupted = None
        for (trial, spec), result, store in zip(members, results, stores, strict=True):
            if isinstance(result, TrainingInterrupted):  # checkpointed, to resume in a retry
                interrupted = result
                continue
            trial.set_user_attr("spec", as_trained(spec, result.iterations).to_dict())
            learner = result.learner if result.status == "complete" else None
            if self.files is not None and learner is not None:
                save_trial_weights(self.files, trial, learner)  # before it is told
            record = result.to_dict()
            trial.set_user_attr("result", record)
            if store is not None:
                store.clear()
            self._tell(study, trial, record)
        if interrupted is not None:
            raise interrupted
        return False

    def _tell(self, study: optuna.Study, trial: optuna.Trial, record: Mapping[str, Any]) -> None:
        """Tells ``trial`` the outcome of its stored evaluation ``record``."""
        if record["status"] == "failed":
            self._fail(study, trial, record["reason"] or "failed")
        elif record["status"] == "pruned":
            self._told(study, study.tell(trial, state=TrialState.PRUNED))
        else:
            self._told(study, study.tell(trial, objective_values(record, self.objectives)))

    def _fail(
        self, study: optuna.Study, trial: optuna.Trial, reason: str, warn: bool = True
    ) -> FrozenTrial:
        if warn:
            log.warning("trial %d failed: %s", trial.number, reason)
        trial.set_user_attr("failure", reason)
        failed = study.tell(trial, state=TrialState.FAIL)
        self._told(study, failed)
        return failed

    def _told(self, study: optuna.Study, trial: FrozenTrial) -> None:
        for callback in self.callbacks:
            callback(study, trial)

    def _queue_again(
        self, study: optuna.Study, asked: list[tuple[optuna.Trial, LearnerSpec]], why: str
    ) -> None:
        """Fails the asked trials not yet told (each checkpointed where it trained) and queues
        them again, to resume from their checkpoints; the run says why it stopped, once."""
        for trial in _running(study, asked):
            reason = f"{why}; a retry resumes from its checkpoint"
            retry(study, self._fail(study, trial, reason, warn=False))

    def _stored_result(self, trial: optuna.Trial) -> dict[str, Any] | None:
        """The evaluation that the trial this one retries stored in full (result and, where
        weights are kept, the weights it names), if it did."""
        frozen = stored(trial)
        record = frozen.user_attrs.get("result")
        if record is None or not is_retry(frozen):
            return None
        kept = self.files is None or record["status"] != "complete"
        return record if kept or load_trial_weights(self.files, frozen) is not None else None


def _running(
    study: optuna.Study, asked: list[tuple[optuna.Trial, LearnerSpec]]
) -> list[optuna.Trial]:
    """The asked trials not yet told their outcome."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return [trial for trial, _ in asked if trial.number in running]
