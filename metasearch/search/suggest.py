"""Sampling one learner spec from a search space with an Optuna trial."""

from __future__ import annotations

from typing import Any

import optuna

from metasearch.errors import SpecError
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
    """``{"inner.lr": 0.1}`` -> ``{"inner": {"lr": 0.1}}`` (and ``outer.options.lam`` into
    ``outer.options``), widths repeated to the depth."""
    nested: dict[str, dict[str, Any]] = {}
    for field, value in values.items():
        if field == DEPTH:
            continue
        if field == WIDTHS and isinstance(value, int):
            value = [value] * values[DEPTH]
        *path, name = field.split(".")
        target = nested
        for part in path:
            target = target.setdefault(part, {})
        target[name] = value
    return nested


def seed_params(space: SearchSpace, values: dict[str, Any]) -> dict[str, Any]:
    """The Optuna parameters under which :func:`suggest` gives the spec that ``values`` (dotted
    fields that ``space`` samples, ``architecture.widths`` as a list) describe, for
    ``enqueue_trial``. Raises :class:`ValueError` naming a field the space does not sample
    there (fixed, derived, conditional or absent), a missing one, or a value out of range."""
    params: dict[str, Any] = {}
    for field, value in values.items():
        dimension = space.dimensions.get(field)
        if field == WIDTHS and isinstance(value, list) and dimension is not None:
            if dimension.per_layer is False:
                if len(set(value)) > 1:
                    raise ValueError(f"{WIDTHS}: this space shares one width across layers")
                params[field] = value[0]
            else:
                params |= {f"{field}.{layer}": width for layer, width in enumerate(value)}
        else:
            params[field] = value
    for name, value in params.items():
        field = WIDTHS if name.startswith(f"{WIDTHS}.") else name
        problem = field in space.dimensions and _out_of_range(space.dimensions[field], value)
        if problem:
            raise ValueError(f"{name}: {problem}")
    trial = optuna.trial.FixedTrial(params)
    try:
        suggest(trial, space)
    except SpecError as error:
        raise ValueError(str(error)) from None
    except ValueError as error:  # FixedTrial's: a sampled field has no value
        missing = str(error).split("'")[1] if "'" in str(error) else str(error)
        raise ValueError(f"gives no value for {missing}, which the space samples here") from None
    unused = sorted(set(params) - set(trial.params))
    if unused:
        raise ValueError(
            f"{', '.join(unused)}: not sampled by the space for this configuration (fixed, "
            "derived, conditional or not a dimension); leave it out"
        )
    return params


def _out_of_range(dimension: Dimension, value: Any) -> str | None:
    if isinstance(dimension, Categorical):
        return (
            None if value in dimension.choices else f"{value!r} is not one of {dimension.choices}"
        )
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} is not a number (write 3e-3 as 3.0e-3 in YAML)"
    if isinstance(dimension, IntRange) and value != int(value):
        return f"{value!r} is not a whole number"
    if not dimension.low <= value <= dimension.high:
        return f"{value!r} is outside [{dimension.low}, {dimension.high}]"
    return None
