"""Meta-algorithms, each one module: importing this package registers every algorithm in the
modules listed below (each module's ``REGISTERED``) with :mod:`metasearch.registry`, which
everything that depends on the algorithm asks."""

from __future__ import annotations

from typing import cast

from metasearch import registry
from metasearch.algorithms import gradient_based, imaml, learned_optimizer, protonet, reptile
from metasearch.algorithms.base import MetaAlgorithm, MetaGradients, query_precision
from metasearch.algorithms.gradient_based import step_weights

for _module in (gradient_based, reptile, protonet, imaml, learned_optimizer):
    for _algorithm in _module.REGISTERED:
        registry.register(_algorithm)


def get_algorithm(name: str) -> MetaAlgorithm:
    """The algorithm called ``name``; :class:`~metasearch.errors.SpecError` where none is."""
    return cast(MetaAlgorithm, registry.lookup(name))


__all__ = ["MetaAlgorithm", "MetaGradients", "get_algorithm", "query_precision", "step_weights"]
