"""Search spaces: which learner-spec fields a study samples, fixes or derives, and how.

A search space file (YAML)::

    name: mlp
    description: MLP learners for sinusoid regression
    fixed:                            # dotted spec field -> value
      architecture.family: mlp
    derived:                          # a value looked up from another field's value
      inner.learned: {from: outer.algorithm, map: {metasgd: true, mamlpp: true, default: false}}
    dimensions:                       # sampled in file order
      outer.algorithm: {type: categorical, choices: [maml, metasgd, mamlpp]}
      architecture.depth: {type: int, low: 1, high: 4}
      architecture.widths: {type: int, low: 16, high: 128, log: true, per_layer: true}
      inner.lr: {type: float, low: 1e-3, high: 0.5, log: true}
      inner.granularity:
        type: categorical
        choices: [scalar, per_layer, per_parameter]
        when: {outer.algorithm: metasgd}   # sampled only where this holds

Rules:

- A dimension with ``when`` is sampled only where every named field has the given value (or one
  of a list of values); the fields must be fixed, derived, or sampled earlier in the file. A
  field that is not sampled keeps the spec's default.
- A derived field takes ``map[value of from]``, else ``map[default]``; where neither exists it is
  left alone. It is decided as soon as its ``from`` field is. A field may be both derived
  (without ``default``) and a dimension: the derived value wins where the map has one, and the
  dimension is sampled elsewhere.
- ``architecture.depth`` is the number of blocks; ``architecture.widths`` then samples one width
  per block (``per_layer: true``, Optuna parameters ``architecture.widths.0``, ``.1``, ...) or
  one width shared by every block (``per_layer: false``). A fixed width may be one integer
  (repeated ``depth`` times) or a list.
- Limits keep a candidate within reach of one machine: at most ``MAX_CHOICES`` choices or map
  entries, and the sizes of ``SIZE_LIMITS`` (blocks, widths, meta-batch, iterations).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from metasearch.errors import SpecError
from metasearch.search.fields import (
    DEPTH,
    FIELDS,
    WIDTHS,
    default,
    unknown_field,
    value_problem,
)
from metasearch.search.files import read_yaml
from metasearch.spec import format_validation_error

Condition = dict[str, Any]
MAX_CHOICES = 1000
SIZE_LIMITS: dict[str, int] = {
    DEPTH: 32,
    WIDTHS: 1024,
    "outer.meta_batch_size": 1024,
    "outer.iterations": 1_000_000,
}
MAX_PROBLEMS = 5  # listed in an error; the rest are counted


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Dimension(_Part):
    when: Condition = {}
    per_layer: bool | None = None

    def conditions(self) -> dict[str, tuple[Any, ...]]:
        """``when`` with every allowed value as a tuple."""
        return {f: tuple(v) if isinstance(v, list) else (v,) for f, v in self.when.items()}


class Categorical(_Dimension):
    type: Literal["categorical"]
    choices: list[Any] = Field(min_length=1, max_length=MAX_CHOICES)


class IntRange(_Dimension):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False


class FloatRange(_Dimension):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False


Dimension = Annotated[Categorical | IntRange | FloatRange, Field(discriminator="type")]


class Derived(_Part):
    source: str = Field(alias="from")
    map: dict[Any, Any] = Field(min_length=1, max_length=MAX_CHOICES)

    def lookup(self, value: Any) -> tuple[bool, Any]:
        """``(True, derived value)``, or ``(False, None)`` where the map gives none."""
        for key in (value, "default"):
            if key in self.map:
                return True, self.map[key]
        return False, None


class SearchSpace(_Part):
    """A validated search space; build it with :func:`load_space` or :func:`parse_space`."""

    name: str
    description: str = ""
    fixed: dict[str, Any] = {}
    derived: dict[str, Derived] = {}
    dimensions: dict[str, Dimension] = {}

    def values_of(self, field: str) -> list[Any]:
        """Every value this space can give the categorical field ``field``."""
        if field in self.fixed:
            return [self.fixed[field]]
        derived, dimension = self.derived.get(field), self.dimensions.get(field)
        values = list(derived.map.values()) if derived else []
        if isinstance(dimension, Categorical):
            values += dimension.choices
        always_set = (derived is not None and "default" in derived.map) or (
            dimension is not None and not dimension.when
        )
        return values if always_set else [*values, default(field)]

    def steps(self) -> list[tuple[str, Derived | Dimension]]:
        """Derivations and dimensions in the order a trial decides them: dimensions in file
        order, each derivation as soon as its ``from`` field is decided (fixed fields first).
        A derivation whose ``from`` is never decided is left out."""
        decided, pending = set(self.fixed), dict(self.derived)
        steps: list[tuple[str, Derived | Dimension]] = []

        def settle() -> None:
            while ready := [f for f, d in pending.items() if d.source in decided]:
                for field in ready:
                    steps.append((field, pending.pop(field)))
                    decided.add(field)

        settle()
        for field, dimension in self.dimensions.items():
            steps.append((field, dimension))
            decided.add(field)
            settle()
        return steps


def load_space(path: str | Path) -> SearchSpace:
    """Reads and checks the search space file at ``path``."""
    return parse_space(read_yaml(path, "search space"), str(path))


def parse_space(data: dict[str, Any], origin: str = "(inline)") -> SearchSpace:
    """Checks plain data as a search space; raises :class:`SpecError` naming each bad field."""
    what = f"search space {origin}"
    try:
        space = SearchSpace.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, what)) from None
    problems = _problems(space)
    if problems:
        more = len(problems) - MAX_PROBLEMS
        shown = problems[:MAX_PROBLEMS] + ([f"and {more} more"] if more > 0 else [])
        raise SpecError(f"invalid {what}: " + "; ".join(shown))
    return space


def _problems(space: SearchSpace) -> list[str]:
    problems = []
    for section in ("fixed", "derived", "dimensions"):
        for field in getattr(space, section):
            if field not in FIELDS:
                problems.append(f"{section}.{field}: {unknown_field(field)}")
    if problems:
        return problems
    problems += _size_problems(space)
    if problems:
        return problems
    for field in space.fixed.keys() & space.dimensions.keys():
        problems.append(f"{field}: both fixed and a dimension; keep one")
    for field in space.fixed.keys() & space.derived.keys():
        problems.append(f"{field}: both fixed and derived; keep one")
    problems += _fixed_problems(space)
    problems += _derived_problems(space)
    for field, dimension in space.dimensions.items():
        problems += [f"dimensions.{field}: {p}" for p in _dimension_problems(field, dimension)]
    problems += _order_problems(space)
    problems += _width_problems(space)
    return problems


def _size_problems(space: SearchSpace) -> list[str]:
    """Values beyond ``SIZE_LIMITS``, found before any is checked further or sampled."""
    found: list[tuple[str, str, Any]] = [(f"fixed.{f}", f, v) for f, v in space.fixed.items()]
    for field, derived in space.derived.items():
        found += [(f"derived.{field}.map.{k}", field, v) for k, v in derived.map.items()]
    for field, dimension in space.dimensions.items():
        where = f"dimensions.{field}"
        if isinstance(dimension, Categorical):
            found += [(f"{where}.choices", field, c) for c in dimension.choices]
        else:
            found.append((f"{where}.high", field, dimension.high))
    problems = []
    for where, field, value in found:
        limit = SIZE_LIMITS.get(field)
        values = value if field == WIDTHS and isinstance(value, list) else [value]
        if field == WIDTHS and len(values) > SIZE_LIMITS[DEPTH]:
            problems.append(f"{where}: more widths than the limit of {SIZE_LIMITS[DEPTH]} blocks")
        elif limit is not None and any(_number(v) and v > limit for v in values):
            problems.append(f"{where}: {value!r} exceeds the limit of {limit:,}")
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fixed_problems(space: SearchSpace) -> list[str]:
    problems = []
    for field, value in space.fixed.items():
        if field == WIDTHS and isinstance(value, int):
            value = (value,)
        if problem := value_problem(field, value):
            problems.append(f"fixed.{field}: {problem}")
    return problems


def _derived_problems(space: SearchSpace) -> list[str]:
    problems = []
    for field, derived in space.derived.items():
        where = f"derived.{field}"
        if field in (DEPTH, WIDTHS):
            problems.append(f"{where}: depth and widths cannot be derived; fix or sample them")
            continue
        if derived.source not in FIELDS:
            problems.append(f"{where}.from: {unknown_field(derived.source)}")
            continue
        if field in space.dimensions and "default" in derived.map:
            problems.append(
                f"{where}: has a default, so the dimension {field} would never be sampled; "
                "drop the default or the dimension"
            )
        for key, value in derived.map.items():
            if key != "default" and (problem := value_problem(derived.source, key)):
                problems.append(f"{where}.map: {derived.source} cannot be {problem}")
            if problem := value_problem(field, value):
                problems.append(f"{where}.map.{key}: {problem}")
    return problems


def _dimension_problems(field: str, dimension: Dimension) -> list[str]:
    if field in (DEPTH, WIDTHS) and dimension.when:
        return ["depth and widths cannot be conditional (when); sample or fix them always"]
    if dimension.per_layer is not None and field != WIDTHS:
        return [f"per_layer applies to {WIDTHS} only"]
    if field in (DEPTH, WIDTHS) and isinstance(dimension, FloatRange):
        return ["must be of type int or categorical"]

    def check(value: Any) -> str | None:
        return value_problem(field, (value,) if field == WIDTHS else value)

    if isinstance(dimension, Categorical):
        return _choice_problems(dimension.choices, check)
    problems = []
    if dimension.low > dimension.high:
        problems.append(f"low {dimension.low} > high {dimension.high}; swap them")
    if dimension.log and dimension.low <= 0:
        problems.append(f"log scale needs low > 0, got {dimension.low}")
    if isinstance(dimension, IntRange) and dimension.log and dimension.step != 1:
        problems.append("log scale needs step 1")
    if isinstance(dimension, FloatRange) and not all(
        math.isfinite(v) for v in (dimension.low, dimension.high)
    ):
        problems.append("low and high must be finite numbers")
    for bound in ("low", "high"):
        if problem := check(getattr(dimension, bound)):
            problems.append(f"{bound}: {problem}")
    return problems


def _choice_problems(choices: list[Any], check: Callable[[Any], str | None]) -> list[str]:
    problems = []
    if len({repr(c) for c in choices}) < len(choices):
        problems.append("choices repeat a value")
    for choice in choices:
        if choice is not None and not isinstance(choice, (bool, int, float, str)):
            problems.append(f"choice {choice!r}: choices must be strings, numbers or booleans")
        elif problem := check(choice):
            problems.append(f"choices: {problem}")
    return problems


def _order_problems(space: SearchSpace) -> list[str]:
    """Conditions and derivations may only read fields decided before them."""
    problems = []
    decided = set(space.fixed)
    for field, step in space.steps():
        if isinstance(step, Derived):
            decided.add(field)
            continue
        for ref, values in step.conditions().items():
            where = f"dimensions.{field}.when"
            if ref not in FIELDS:
                problems.append(f"{where}: {unknown_field(ref)}")
            elif ref == WIDTHS:
                problems.append(f"{where}: conditions on widths are not supported")
            elif ref not in decided:
                problems.append(
                    f"{where}: {ref} is neither fixed, derived nor sampled before {field}; "
                    f"sample {ref} earlier in the file or drop the condition"
                )
            else:
                problems += [
                    f"{where}.{ref}: {ref} cannot be {p}"
                    for v in values
                    if (p := value_problem(ref, v))
                ]
        if field in space.derived and field not in decided:
            source = space.derived[field].source
            problems.append(
                f"derived.{field}: comes from {source}, which is decided after the dimension "
                f"{field}; sample {source} earlier in the file"
            )
        decided.add(field)
    for field, derived in space.derived.items():
        if field not in decided and derived.source in FIELDS:
            problems.append(
                f"derived.{field}.from: {derived.source} is neither fixed, derived nor sampled "
                "(or the derivations form a cycle); fix or sample it"
            )
    return problems


def _width_problems(space: SearchSpace) -> list[str]:
    order = list(space.dimensions)
    if WIDTHS in space.dimensions:
        if DEPTH in space.fixed:
            return []
        if DEPTH not in space.dimensions:
            return [f"dimensions.{WIDTHS}: needs {DEPTH} (fixed, or a dimension before it)"]
        if order.index(DEPTH) > order.index(WIDTHS):
            return [f"dimensions.{WIDTHS}: sample {DEPTH} before it"]
        return []
    has_depth = DEPTH in space.fixed or DEPTH in space.dimensions
    if has_depth != isinstance(space.fixed.get(WIDTHS), int):
        return [
            f"{DEPTH} and a single fixed width go together: fix {WIDTHS} to one integer with "
            f"{DEPTH}, or to a list of widths without it"
        ]
    return []
