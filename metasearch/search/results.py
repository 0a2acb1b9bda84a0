"""Reading a study's trials back: a table of every trial, the best ones, and a summary."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from metasearch.spec import LearnerSpec, applies

HISTORY_ATTR = "architecture_weights"
"""The trial user attribute that holds a differentiable search's architecture-weight history."""
HISTORIES_SHOWN = 3

RESULT_COLUMNS = (
    "query_loss_ci95",
    "accuracy",
    "accuracy_ci95",
    "n_parameters",
    "meta_train_seconds",
    "adaptation_seconds",
    "iterations",
)
INTEGER_COLUMNS = ("number", "n_parameters", "iterations")
"""Counts, kept whole numbers (``Int64``) even where an objective stores them as floats."""
SPEC_SECTIONS = tuple(LearnerSpec.model_fields)
_STATE_RANK = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2}
COUNTED = (
    TrialState.COMPLETE,
    TrialState.PRUNED,
    TrialState.FAIL,
    TrialState.RUNNING,
    TrialState.WAITING,  # queued by enqueue or as a seed
)


@dataclass(frozen=True)
class StudySummary:
    """One study of a storage, as ``metasearch studies`` lists it: its trials by state
    (``complete``, ``pruned``, ``fail``, ``running``, ``waiting``) and, for each objective, the
    best value of a complete trial with that trial's number (none before the first)."""

    name: str
    counts: dict[str, int]
    best: list[tuple[str, float, int]]

    @property
    def trials(self) -> int:
        return sum(self.counts.values())


def summarize(study: optuna.Study) -> StudySummary:
    """What :class:`StudySummary` holds, read off ``study``."""
    trials = study.get_trials(deepcopy=False)
    counts = {s.name.lower(): sum(t.state == s for t in trials) for s in COUNTED}
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    best = []
    for i, (name, direction) in enumerate(zip(objective_names(study), study.directions)):
        sign = 1 if direction == optuna.study.StudyDirection.MINIMIZE else -1
        if complete:  # the earliest of equals
            value, number = min((sign * t.values[i], t.number) for t in complete)
            best.append((name, sign * value, number))
    return StudySummary(study.study_name, counts, best)


def objective_names(study: optuna.Study) -> list[str]:
    """The study's objectives as recorded at creation (its metric names, else ``value_0``, ...
    for foreign studies)."""
    return (
        study.user_attrs.get("objectives")
        or study.metric_names
        or [f"value_{i}" for i in range(len(study.directions))]
    )


def missing(value: Any) -> bool:
    """Whether a cell of :func:`trials_frame` holds no value (None, NaN or pandas' NA)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial, best first: ``number``, ``state``, the objective values, the scores
    and costs of its evaluation, ``pareto`` (multi-objective studies), ``failure`` and the spec's
    fields by dotted name, as stored (lists stay lists, a missing value is None). Complete
    trials come first, then pruned, then failed ones."""
    names = objective_names(study)
    multi = len(names) > 1
    front = {t.number for t in study.best_trials} if multi else set()
    rows = [_row(trial, names, multi and trial.number in front) for trial in study.trials]
    base = ["number", "state", *names, *(c for c in RESULT_COLUMNS if c not in names)]
    frame = pd.DataFrame(rows, columns=None if rows else base, dtype=object)
    if frame.empty:
        return frame
    numeric = ("number", *names, *RESULT_COLUMNS)  # the rest stay objects, as stored
    types = {c: "Int64" if c in INTEGER_COLUMNS else "float64" for c in numeric}
    frame = frame.astype(types | ({"pareto": bool} if multi else {}))
    minimize = study.directions[0] == optuna.study.StudyDirection.MINIMIZE
    order = frame.assign(
        _state=[_STATE_RANK.get(TrialState[s], 3) for s in frame["state"]],
        _front=~frame["pareto"] if multi else False,
        _value=frame[names[0]] if minimize else -frame[names[0]],
    ).sort_values(["_state", "_front", "_value", "number"], na_position="last")
    return frame.loc[order.index].reset_index(drop=True)


def applicable(frame: pd.DataFrame) -> pd.DataFrame:
    """For each trial (row) of a :func:`trials_frame` and each of its spec fields (column),
    whether the field means anything to that trial's learner (:func:`metasearch.spec.applies`)."""
    fields = [c for c in frame.columns if c.split(".", 1)[0] in SPEC_SECTIONS]
    return pd.DataFrame(
        [[applies(f, row) for f in fields] for row in frame[fields].to_dict("records")],
        index=frame.index,
        columns=fields,
        dtype=bool,
    )


def best_trials(study: optuna.Study, k: int | None = None) -> list[FrozenTrial]:
    """Single objective: the ``k`` best complete trials (all where ``k`` is None). Several
    objectives: the Pareto front, by the first objective (at most ``k``)."""
    if len(study.directions) > 1:
        trials = sorted(study.best_trials, key=lambda t: t.values[0])
    else:
        sign = 1 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        trials = sorted(complete, key=lambda t: sign * t.value)
    return trials if k is None else trials[:k]


def architecture_histories(study: optuna.Study) -> list[tuple[int, dict]]:
    """``(trial number, history)`` of the best trials that ran a differentiable search (at most
    :data:`HISTORIES_SHOWN`), for :func:`metasearch.darts.plot.architecture_weight_pngs`."""
    trials = [t for t in best_trials(study) if HISTORY_ATTR in t.user_attrs][:HISTORIES_SHOWN]
    return [(trial.number, trial.user_attrs[HISTORY_ATTR]) for trial in trials]


def _row(trial: FrozenTrial, names: list[str], on_front: bool) -> dict[str, Any]:
    result = trial.user_attrs.get("result", {})
    values = trial.values or [math.nan] * len(names)
    row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
    row |= dict(zip(names, values))
    row |= {c: result.get(c) for c in RESULT_COLUMNS if c not in names}
    if len(names) > 1:
        row["pareto"] = on_front
    row["failure"] = trial.user_attrs.get("failure")
    row["reason"] = result.get("reason")  # why a pruned trial stopped
    for section, fields in trial.user_attrs.get("spec", {}).items():
        for name, value in fields.items():
            row[f"{section}.{name}"] = value
    return row


def describe_trial(trial: FrozenTrial) -> str:
    """One line on what a complete trial scored and really trained: ``#3 query loss 0.41 ±
    0.05, accuracy 85.20% ± 1.10%, 477 meta-iterations (seed protonet_snell2017)``."""
    result = trial.user_attrs.get("result", {})
    value = trial.values[0] if trial.values else math.nan
    ci = result.get("query_loss_ci95")
    text = f"#{trial.number} query loss {value:.4g}" + ("" if ci is None else f" ± {ci:.2g}")
    if result.get("accuracy") is not None:
        text += f", accuracy {result['accuracy']:.2%} ± {result.get('accuracy_ci95', 0):.2%}"
    if result.get("iterations") is not None:
        text += f", {result['iterations']} meta-iterations"
    seed = trial.user_attrs.get("seed")
    return text + (f" (seed {seed})" if seed else "")
