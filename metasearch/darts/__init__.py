"""Differentiable architecture search for meta-learners (DARTS within MetaNAS).

::

    result = search_architecture(spec, source, DartsConfig(iterations=300))
    if result.genotype is not None:         # else result.status and result.reason say why not
        derived = genotype_spec(spec, result.genotype, channels=16)
        evaluate(derived, source, budget)   # the derived cells train like any architecture
"""

from metasearch.darts.config import DartsConfig
from metasearch.darts.genotype import derive_genotype, genotype_spec
from metasearch.darts.search import (
    ArchitectureSearch,
    SearchResult,
    architecture_weights,
    search_architecture,
)

__all__ = [
    "ArchitectureSearch",
    "DartsConfig",
    "SearchResult",
    "architecture_weights",
    "derive_genotype",
    "genotype_spec",
    "search_architecture",
]
