"""The learner-spec fields a search space may name, by dotted name (``inner.lr``).

``architecture.depth`` is the one name that is not a spec field: the number of blocks, which a
space samples or fixes so that ``architecture.widths`` can hold one width per block. An
algorithm's own options are named ``outer.options.<option>`` (``outer.options.lam``), from the
options models of the registered algorithms (:mod:`metasearch.registry`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from metasearch import registry
from metasearch.spec import LearnerSpec

DEPTH = "architecture.depth"
WIDTHS = "architecture.widths"

_SECTIONS: dict[str, type[BaseModel]] = {
    section: info.annotation  # type: ignore[misc]
    for section, info in LearnerSpec.model_fields.items()
}
OPTIONS = "outer.options."
_OPTIONS: dict[str, type[BaseModel]] = {
    f"{OPTIONS}{name}": algorithm.options
    for algorithm in registry.registered()
    for name in algorithm.options.model_fields
}
"""Each option field and the options model (of the first algorithm declaring it) it belongs to."""
SPEC_FIELDS: tuple[str, ...] = (
    *(
        f"{section}.{name}"
        for section, model in _SECTIONS.items()
        for name in model.model_fields
        if f"{section}.{name}" != OPTIONS.rstrip(".")
    ),
    *_OPTIONS,
)
FIELDS: tuple[str, ...] = (*SPEC_FIELDS, DEPTH)


def default(field: str) -> Any:
    """The value ``field`` takes in a spec that does not set it."""
    if field == DEPTH:
        return len(default(WIDTHS))
    if field in _OPTIONS:
        return _OPTIONS[field].model_fields[field.removeprefix(OPTIONS)].get_default()
    section, name = field.split(".", 1)
    return _SECTIONS[section].model_fields[name].get_default()


def value_problem(field: str, value: Any) -> str | None:
    """Why ``value`` cannot be ``field``'s value on its own (allowed values included), or None."""
    if field == DEPTH:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        return None if ok else f"{value!r} is not a depth; give an integer >= 1"
    model, name = (
        (_OPTIONS[field], field.removeprefix(OPTIONS))
        if field in _OPTIONS
        else (_SECTIONS[field.split(".")[0]], field.split(".", 1)[1])
    )
    try:
        model.model_validate({name: value})
    except ValidationError as error:
        for problem in error.errors():
            if problem["loc"] == (name,):
                return f"{value!r}: {problem['msg'].removeprefix('Value error, ')}"
    return None


def unknown_field(field: str) -> str:
    """The message for a name that is no spec field."""
    return f"unknown field {field!r}; valid fields: {', '.join(FIELDS)}"
