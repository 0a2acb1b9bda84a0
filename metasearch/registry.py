"""The meta-algorithms, by the name a learner spec gives (``outer.algorithm``).

One registration per algorithm feeds everything that depends on which algorithm a spec names:
the spec's validation and which of its fields apply (:mod:`metasearch.spec`), the learner's
parameters and meta-state, the engines, the evaluator, export, checkpoints and the search
spaces' option fields. Nothing else matches algorithm names.

The built-in algorithms register themselves when :mod:`metasearch.algorithms` is imported; the
first lookup imports it, as a plugin loader would, so that a spec can be validated without
importing the algorithms first. An algorithm of one's own is registered the same way, with
:func:`register`.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from pydantic import BaseModel

from metasearch.errors import SpecError

BUILT_IN = "metasearch.algorithms"
"""The module whose import registers the built-in algorithms."""


class AlgorithmRules(Protocol):
    """What the spec layer needs to know of an algorithm (the algorithm object itself, see
    :class:`metasearch.algorithms.base.MetaAlgorithm`)."""

    name: str
    uses: frozenset[str]
    """The algorithm-specific spec fields it reads (``inner.steps``, ``outer.options.lam``):
    a field that some algorithm declares applies only to the algorithms that declare it."""
    options: type[BaseModel]
    """The model of its ``outer.options`` (pydantic, unknown keys refused)."""

    def check(self, spec: Any) -> None:
        """Raises ``ValueError`` saying what to change where ``spec`` does not fit the
        algorithm (an inner loop it lacks, rates it cannot learn, ...)."""
        ...

    def keeps(self, spec: Any, name: str) -> bool:
        """Whether the learner meta-learns its network parameter ``name``."""
        ...

    def adapted_names(self, spec: Any, names: list[str]) -> list[str]:
        """The parameters, of ``names``, that the inner loop adapts."""
        ...

    def initial_meta_state(self, spec: Any, params: Any, adapted: list[str]) -> Any:
        """The tensors the algorithm owns besides the network's parameters, keyed as stored."""
        ...


_REGISTERED: dict[str, AlgorithmRules] = {}


def register(algorithm: AlgorithmRules) -> None:
    """Adds ``algorithm`` under its ``name``; a second algorithm of one name is refused."""
    if algorithm.name in _REGISTERED and _REGISTERED[algorithm.name] is not algorithm:
        raise ValueError(f"an algorithm named {algorithm.name!r} is already registered")
    _REGISTERED[algorithm.name] = algorithm


def names() -> tuple[str, ...]:
    """Every registered algorithm's name, in registration order."""
    _load_built_in()
    return tuple(_REGISTERED)


def lookup(name: str) -> AlgorithmRules:
    """The algorithm called ``name``; :class:`SpecError` naming the choices where none is."""
    _load_built_in()
    if name not in _REGISTERED:
        raise SpecError(f"unknown algorithm {name!r}; choose one of {', '.join(_REGISTERED)}")
    return _REGISTERED[name]


def registered() -> tuple[AlgorithmRules, ...]:
    """Every registered algorithm."""
    _load_built_in()
    return tuple(_REGISTERED.values())


def _load_built_in() -> None:
    importlib.import_module(BUILT_IN)
