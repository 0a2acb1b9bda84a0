"""Meta-algorithms, looked up by the name a learner spec gives."""

from __future__ import annotations

from metasearch.algorithms.base import MetaAlgorithm, MetaGradients
from metasearch.algorithms.gradient_based import GradientBased, MAMLPlusPlus, step_weights
from metasearch.algorithms.protonet import PrototypicalNetworks
from metasearch.algorithms.reptile import Reptile
from metasearch.errors import SpecError
from metasearch.spec import ALGORITHMS

_FACTORIES = {
    "maml": lambda: GradientBased("maml"),
    "fomaml": lambda: GradientBased("fomaml", first_order=True),
    "metasgd": lambda: GradientBased("metasgd"),
    "anil": lambda: GradientBased("anil", head_only=True),
    "mamlpp": MAMLPlusPlus,
    "reptile": Reptile,
    "protonet": PrototypicalNetworks,
}
assert set(_FACTORIES) == set(ALGORITHMS)


def get_algorithm(name: str) -> MetaAlgorithm:
    """The algorithm called ``name``; one of :data:`metasearch.spec.ALGORITHMS`."""
    if name not in _FACTORIES:
        raise SpecError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")
    return _FACTORIES[name]()


__all__ = [
    "GradientBased",
    "MAMLPlusPlus",
    "MetaAlgorithm",
    "MetaGradients",
    "PrototypicalNetworks",
    "Reptile",
    "get_algorithm",
    "step_weights",
]
