"""The report's interactive figures, drawn with ``optuna.visualization`` (plotly).

A figure the study cannot support yet (too few complete trials) raises :class:`Unavailable`
with the reason, which the page shows in its place.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.importance import FanovaImportanceEvaluator
from optuna.search_space import intersection_search_space
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import (
    plot_optimization_history,
    plot_parallel_coordinate,
    plot_param_importances,
    plot_pareto_front,
)

from metasearch.search.results import objective_names

MIN_FOR_IMPORTANCES = 5
"""Complete trials below which parameter importances (fANOVA) say nothing worth plotting."""
TOP_PARAMS = 6
"""Parameters in the parallel-coordinates view: the most important ones."""
UNIT_LABELS = {
    "iterations": "meta-iterations",
    "seconds": "seconds of meta-training",
    "examples": "meta-training examples",
}


class Unavailable(Exception):
    """A figure this study cannot have (yet); the message says why."""


def learning_curves(study: optuna.Study) -> go.Figure:
    """One line per finished trial over the budget's unit: its validation scores while it
    trained, then its final score (a star), so that trials stopped before their first
    evaluation show as a lone star. Pruned trials are dashed."""
    unit = study.user_attrs.get("budget", {}).get("unit", "iterations")
    figure = go.Figure()
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    for trial in finished:
        points = trial_points(trial, unit)
        if not points:
            continue
        steps, values, final = zip(*points)
        pruned = trial.state == TrialState.PRUNED
        figure.add_trace(
            go.Scatter(
                x=steps,
                y=values,
                mode="lines+markers",
                name=f"trial {trial.number}" + (" (pruned)" if pruned else ""),
                line={"dash": "dash" if pruned else "solid"},
                marker={
                    "symbol": ["star" if f else "circle" for f in final],
                    "size": [12 if f else 6 for f in final],
                },
                text=["final score" if f else "during training" for f in final],
                hovertemplate="%{text}: %{y:.4g} at %{x:.4g}<extra>%{fullData.name}</extra>",
            )
        )
    if not figure.data:
        raise Unavailable("no trial has finished with a score yet")
    values = [v for trace in figure.data for v in trace.y]
    figure.update_layout(
        title="Learning curves",
        xaxis_title=UNIT_LABELS.get(unit, unit),
        yaxis_title=f"validation {objective_names(study)[0]}",
        yaxis_type="log" if min(values) > 0 else "linear",
        legend_title="stars: final scores",
    )
    return figure


def trial_points(trial: FrozenTrial, unit: str) -> list[tuple[float, float, bool]]:
    """``(step, validation score, is final)`` of ``trial``: its intermediate values (from the
    evaluation's curve where it reported none to Optuna, as multi-objective trials do), then its
    final score at the budget it really spent."""
    result = trial.user_attrs.get("result", {})
    spent = {
        "iterations": result.get("iterations"),
        "seconds": result.get("meta_train_seconds"),
        "examples": result.get("examples"),
    }.get(unit)
    points = sorted(trial.intermediate_values.items())
    if not points and result.get("curve") and spent and result.get("iterations"):
        per_iteration = spent / result["iterations"]  # the curve counts meta-iterations
        points = [(i * per_iteration, v) for i, v in result["curve"]]
    shown = [(float(s), float(v), False) for s, v in points if math.isfinite(v)]
    final = result.get("query_loss", trial.values[0] if trial.values else None)
    if final is not None and math.isfinite(final):
        step = spent if spent is not None else (shown[-1][0] if shown else 0.0)
        shown.append((float(step), float(final), True))
    return shown


def optimization_history(study: optuna.Study) -> go.Figure:
    """Each complete trial's first objective in the order trials ran, with the best so far."""
    _need_complete(study, 1)
    return _quiet(plot_optimization_history, study, **_first_objective(study))


def importances(study: optuna.Study) -> go.Figure:
    """fANOVA importances of the parameters every complete trial sampled, per objective."""
    _need_complete(study, MIN_FOR_IMPORTANCES, "parameter importances")
    return _quiet(plot_param_importances, study, evaluator=FanovaImportanceEvaluator(seed=0))


def top_params(study: optuna.Study, k: int = TOP_PARAMS) -> list[str]:
    """The ``k`` most important parameters for the first objective (where the study has
    enough complete trials to tell), else the first ``k`` that every complete trial sampled."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) >= MIN_FOR_IMPORTANCES:
        ranked = _quiet(
            optuna.importance.get_param_importances,
            study,
            evaluator=FanovaImportanceEvaluator(seed=0),
            target=lambda t: t.values[0],
        )
        return list(ranked)[:k]
    shared = intersection_search_space(complete, include_pruned=False)
    return [p for p in shared if len({t.params[p] for t in complete}) > 1][:k]


def parallel_coordinates(study: optuna.Study) -> go.Figure:
    """The first objective against the most important parameters only (:func:`top_params`)."""
    _need_complete(study, 2, "parallel coordinates")
    params = top_params(study)
    if not params:
        raise Unavailable("no parameter differs between the complete trials")
    return _quiet(plot_parallel_coordinate, study, params=params, **_first_objective(study))


def pareto_front(study: optuna.Study) -> go.Figure:
    """The trials in the objectives' space, the front highlighted (two or three objectives)."""
    names = objective_names(study)
    if len(names) > 3:
        raise Unavailable(f"a Pareto front is drawn for 2 or 3 objectives, not {len(names)}")
    _need_complete(study, 1)
    return _quiet(plot_pareto_front, study, target_names=names)


def _first_objective(study: optuna.Study) -> dict[str, Any]:
    """Plot arguments for the first objective (Optuna draws the best-so-far line only without a
    ``target``, which several objectives need)."""
    names = objective_names(study)
    several = {"target": lambda t: t.values[0]} if len(names) > 1 else {}
    return several | {"target_name": names[0]}


def _need_complete(study: optuna.Study, n: int, what: str = "") -> None:
    found = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if found < n:
        needs = f"{what} need" if what else "this needs"
        raise Unavailable(f"{needs} {n} complete trial{'s' * (n > 1)}; the study has {found}")


def _quiet(plot: Any, *args: Any, **kwargs: Any) -> Any:
    """Optuna warns that ``target`` is for single objectives and that some plots are
    experimental: the report passes ``target`` on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return plot(*args, **kwargs)
