"""Sampling one learner spec from a search space with an Optuna trial."""

from __future__ import annotations

from typing import Any

import optuna

from metasearch.search.fields import DEPTH, WIDTHS, default
from metasearch.search.space import Categorical, Derived, Dimension, IntRange, SearchSpace
from metasearch.spec import LearnerSpec


def suggest(trial: optuna.Trial, space: SearchSpace) -> LearnerSpec:
    """The spec ``trial`` samples from ``space``; Optuna parameters carry the dotted field names.

    Raises :class:`~metasearch.errors.SpecError` where the sampled values make no valid spec.
    """
    values: dict[str, Any] = dict(space.fixed)

    def value_of(field: str) -> Any:
        return values.get(field, default(field))

    for field, step in space.steps():
        if isinstance(step, Derived):
            found, value = step.lookup(value_of(step.source))
            if found:
                values[field] = value
        elif field not in values and all(  # a derived value wins over the dimension
            value_of(ref) in allowed for ref, allowed in step.conditions().items()
        ):
            values[field] = _sample(trial, field, step, values)
    return LearnerSpec.from_dict(_nested(values))


def _sample(trial: optuna.Trial, field: str, dimension: Dimension, values: dict[str, Any]) -> Any:
    if field != WIDTHS:
        return _suggest(trial, field, dimension)
    depth = values[DEPTH]
    if dimension.per_layer is False:
        return [_suggest(trial, field, dimension)] * depth
    return [_suggest(trial, f"{field}.{layer}", dimension) for layer in range(depth)]


def _suggest(trial: optuna.Trial, name: str, dimension: Dimension) -> Any:
    if isinstance(dimension, Categorical):
        return trial.suggest_categorical(name, dimension.choices)
    if isinstance(dimension, IntRange):
        return trial.suggest_int(
            name, dimension.low, dimension.high, step=dimension.step, log=dimension.log
        )
    return trial.suggest_float(name, dimension.low, dimension.high, log=dimension.log)


def _nested(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"inner.lr": 0.1}`` -> ``{"inner": {"lr": 0.1}}``, widths repeated to the depth."""
    nested: dict[str, dict[str, Any]] = {}
    for field, value in values.items():
        if field == DEPTH:
            continue
        if field == WIDTHS and isinstance(value, int):
            value = [value] * values[DEPTH]
        section, name = field.split(".", 1)
        nested.setdefault(section, {})[name] = value
    return nested
