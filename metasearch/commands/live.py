"""The live account of a run: a study bar and the running trial's bar on a terminal, plain lines
at a low rate elsewhere (CI logs, files, pipes).

A study run feeds it two ways: Optuna's callback after each trial, and the evaluator's
progress of the running trial (:mod:`metasearch.evaluation.progress`). Log lines and other
output go through the same console, so they print above the bars, never onto them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from metasearch.evaluation import TrainingProgress
from metasearch.search.trials import FINISHED

PLAIN_SECONDS = 30.0
"""Where the output is not a terminal, the least time between two lines on a running trial."""

Clock = Callable[[], float]


def duration(seconds: float | None) -> str:
    """``seconds`` for a person: ``45 s``, ``12 min``, ``3.5 h``; ``?`` where unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class StudyEta:
    """Estimates the seconds until a study run has its trials: the running trial's time left,
    then the mean wall-clock time of the trials this run finished for each other one (before
    any finished, the running trial's own total at its pace through its budget), shared among
    the workers running them."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self.trial_started = clock()
        self.durations: list[float] = []
        self.current: TrainingProgress | None = None

    def trial_progress(self, progress: TrainingProgress) -> None:
        self.current = progress

    def trial_ended(self) -> None:
        now = self.clock()
        self.durations.append(now - self.trial_started)
        self.trial_started, self.current = now, None

    def seconds_left(self, remaining: int, workers: int = 1) -> float | None:
        """Seconds until ``remaining`` more trials (the running one counted) are finished by
        ``workers`` processes like this one; None until something was measured."""
        if remaining <= 0:
            return 0.0
        elapsed = self.clock() - self.trial_started
        current_left = self.current.seconds_left if self.current is not None else None
        if self.durations:
            per_trial = sum(self.durations) / len(self.durations)
        elif current_left is not None:
            per_trial = elapsed + current_left
        else:
            return None
        if current_left is None:
            current_left = max(per_trial - elapsed, 0.0)
        return current_left + (remaining - 1) * per_trial / max(workers, 1)


def rate_eta(finished: int, elapsed: float, remaining: int) -> float | None:
    """Seconds until ``remaining`` more trials are finished at the rate of ``finished`` trials
    in ``elapsed`` seconds (many workers together); None before the first."""
    if remaining <= 0:
        return 0.0
    return remaining * elapsed / finished if finished > 0 else None


def best_text(study: optuna.Study) -> str:
    """The best value so far with its trial, the size of the Pareto front, or ``-``."""
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the Pareto front"
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    values = [t.value for t in complete if t.value is not None and math.isfinite(t.value)]
    if not values:
        return "-"
    best = study.best_trial
    return f"{best.value:.4g} (#{best.number})"


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def trial_text(progress: TrainingProgress) -> str:
    """How far a running trial is: iterations, latest validation loss, time left."""
    done = f"{progress.iterations}/{progress.total}" if progress.total else str(progress.iterations)
    text = f"{done} it ({progress.spent:.0%} of budget)"
    if progress.validation is not None:
        text += f", val {progress.validation:.4g}"
    return text + f", {duration(progress.seconds_left)} left"


class StudyDisplay:
    """The progress of a study run in this process. Call it as Optuna's callback after each
    trial, and give :meth:`observe` to the run as its trial observer. Where the study is
    ``shared`` with other workers, the ETA counts the trials they run as workers like this one."""

    def __init__(
        self,
        console: Console,
        name: str,
        target: int,
        study: optuna.Study,
        clock: Clock = time.monotonic,
        shared: bool = False,
    ) -> None:
        self.console, self.name, self.target, self.clock = console, name, target, clock
        self.shared, self.workers = shared, 1
        self.live = console.is_terminal
        self.eta = StudyEta(clock)
        self.finished, self.best, self.last = finished_count(study), best_text(study), "-"
        self.running: int | None = None
        self.said_at = clock()
        self.progress = _progress(console)
        self.study_task = self.progress.add_task(f"[bold]{escape(name)}", total=target, info="")
        self.trial_task = self.progress.add_task("", total=1.0, visible=False, info="")
        self._refresh()

    def shown(self) -> contextlib.AbstractContextManager[None]:
        """Shows the bars while the block runs (on a terminal)."""
        return showing(self.progress, self.live)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.eta.trial_ended()
        self.running = None
        self.finished, self.best = finished_count(study), best_text(study)
        if self.shared:  # this worker's trial is over: the running ones are the others'
            self.workers = 1 + len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        self.last = f"#{trial.number} {trial.state.name.lower()}"
        self.progress.update(self.trial_task, visible=False)
        self._refresh()
        if not self.live:
            self.said_at = self.clock()
            failure = trial.user_attrs.get("failure")
            self.console.print(
                f"trial {trial.number} {trial.state.name.lower()}"
                + (f": {failure}" if failure else "")
                + f"; {self.finished}/{self.target} finished, best {self.best}"
                + f", study ETA {duration(self._eta())}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def observe(self, number: int, progress: TrainingProgress) -> None:
        """The running trial's progress, from the evaluator."""
        self.eta.trial_progress(progress)
        if number != self.running:
            self.running = number
            self.progress.reset(self.trial_task, total=1.0, visible=True)
            self.progress.update(self.trial_task, description=f"  trial #{number}")
        self.progress.update(self.trial_task, completed=progress.spent, info=trial_text(progress))
        self._refresh()
        now = self.clock()
        if not self.live and now - self.said_at >= PLAIN_SECONDS:
            self.said_at = now
            self.console.print(
                f"trial {number}: {trial_text(progress)}; study ETA {duration(self._eta())}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )

    def _eta(self) -> float | None:
        return self.eta.seconds_left(self.target - self.finished, self.workers)

    def _refresh(self) -> None:
        per_trial = self.eta.durations and sum(self.eta.durations) / len(self.eta.durations)
        speed = f", {per_trial:.1f} s/trial" if per_trial else ""
        self.progress.update(
            self.study_task,
            completed=self.finished,
            info=f"{self.finished}/{self.target} best {self.best} last {self.last}{speed}, "
            f"ETA {duration(self._eta())}",
        )


class TrainingDisplay:
    """The progress of one retraining, as a bar on a terminal (elsewhere its validation lines
    say enough)."""

    def __init__(self, console: Console, label: str) -> None:
        self.live = console.is_terminal
        self.progress = _progress(console)
        self.task = self.progress.add_task(f"[bold]{escape(label)}", total=1.0, info="")

    def shown(self) -> contextlib.AbstractContextManager[None]:
        return showing(self.progress, self.live)

    def observe(self, progress: TrainingProgress) -> None:
        self.progress.update(self.task, completed=progress.spent, info=trial_text(progress))


class FollowedStudy:
    """The progress of a study that worker processes run, read from its storage: finished
    trials, the best, the last one finished, an ETA at the workers' rate, and the trials running
    with their last reported validation loss."""

    def __init__(
        self, console: Console, name: str, target: int, clock: Clock = time.monotonic
    ) -> None:
        self.console, self.target, self.clock = console, target, clock
        self.live = console.is_terminal
        self.started, self.finished_at_start = clock(), None
        self.progress = _progress(console)
        self.study_task = self.progress.add_task(f"[bold]{escape(name)}", total=target, info="")
        self.running_task = self.progress.add_task("", total=None, visible=False, info="")
        self.last_said: int | None = None

    def shown(self) -> contextlib.AbstractContextManager[None]:
        """Shows the bars while the block runs (on a terminal)."""
        return showing(self.progress, self.live)

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state in FINISHED]
        if self.finished_at_start is None:
            self.finished_at_start = len(finished)
        ended = [t for t in trials if t.datetime_complete is not None]
        last = max(ended, key=lambda t: t.datetime_complete) if ended else None  # type: ignore
        last_text = "-" if last is None else f"#{last.number} {last.state.name.lower()}"
        eta = rate_eta(
            len(finished) - self.finished_at_start,
            self.clock() - self.started,
            self.target - len(finished),
        )
        best = best_text(study)
        info = f"{len(finished)}/{self.target} best {best} last {last_text}, ETA {duration(eta)}"
        self.progress.update(self.study_task, completed=len(finished), info=info)
        running = [_running_text(t) for t in trials if t.state == TrialState.RUNNING]
        self.progress.update(
            self.running_task,
            visible=bool(running),
            description="  running",
            info=", ".join(running),
        )
        if not self.live and last is not None and last.number != self.last_said:
            self.last_said = last.number
            self.console.print(
                f"{len(finished)}/{self.target} finished, last {last_text}, best {best}, "
                f"study ETA {duration(eta)}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )


@contextlib.contextmanager
def showing(progress: Progress, live: bool) -> Iterator[None]:
    """Shows ``progress`` while the block runs where ``live``; it vanishes where the block
    fails, leaving the error's one line."""
    if not live:
        yield
        return
    with progress:
        try:
            yield
        except BaseException:
            progress.live.transient = True
            raise


def _running_text(trial: FrozenTrial) -> str:
    if not trial.intermediate_values:
        return f"#{trial.number}"
    step = max(trial.intermediate_values)
    return f"#{trial.number} val {trial.intermediate_values[step]:.4g} at {step}"


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}", markup=False),
        TimeElapsedColumn(),
        console=console,
    )
