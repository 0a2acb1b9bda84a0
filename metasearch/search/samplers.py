"""The Optuna sampler and pruner a study file asks for."""

from __future__ import annotations

import importlib.util

import optuna

from metasearch.errors import SpecError
from metasearch.search.study import PRUNERS, SAMPLERS, StudyConfig

_NEEDS = {"cmaes": "cmaes", "gp": "scipy"}


def make_sampler(config: StudyConfig, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``sampler.seed`` (else the study's ``seed``) plus
    ``seed_offset``."""
    sampler = config.sampler
    assert sampler is not None  # StudyConfig fills in the default
    needed = _NEEDS.get(sampler.name)
    if needed and importlib.util.find_spec(needed) is None:
        raise SpecError(f"the {sampler.name} sampler needs {needed}: pip install {needed}")
    seed = ((config.seed if sampler.seed is None else sampler.seed) + seed_offset) % 2**32
    try:
        return SAMPLERS[sampler.name](seed=seed, **sampler.options)
    except (TypeError, ValueError) as error:
        raise SpecError(f"sampler.options: {error}") from None


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner; Hyperband's resources default to ``budget.eval_every`` and
    ``budget.iterations`` (meta-iterations)."""
    pruner = config.pruner
    options = dict(pruner.options)
    if pruner.name == "hyperband":
        options.setdefault("min_resource", config.budget.eval_every)
        options.setdefault("max_resource", config.budget.iterations or "auto")
    try:
        return PRUNERS[pruner.name](**options)
    except (TypeError, ValueError) as error:
        raise SpecError(f"pruner.options: {error}") from None
