"""The Optuna sampler and pruner a study file asks for."""

from __future__ import annotations

import importlib.util
import math

import optuna

from metasearch.errors import SpecError
from metasearch.search.study import PRUNERS, SAMPLERS, StudyConfig

_NEEDS = {"cmaes": "cmaes", "gp": "scipy"}


def make_sampler(config: StudyConfig, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded with ``sampler.seed`` (else the study's ``seed``) plus
    ``seed_offset``. TPE's random start-up trials default to a quarter of the study's trials
    (at most Optuna's 10, at least the study's seeds), so a short study does not spend itself
    at random."""
    sampler = config.sampler
    assert sampler is not None  # StudyConfig fills in the default
    needed = _NEEDS.get(sampler.name)
    if needed and importlib.util.find_spec(needed) is None:
        raise SpecError(f"the {sampler.name} sampler needs {needed}: pip install {needed}")
    seed = ((config.seed if sampler.seed is None else sampler.seed) + seed_offset) % 2**32
    options = dict(sampler.options)
    if sampler.name == "tpe":
        options.setdefault("n_startup_trials", startup_trials(config))
    try:
        return SAMPLERS[sampler.name](seed=seed, **options)
    except (TypeError, ValueError) as error:
        raise SpecError(f"sampler.options: {error}") from None


def startup_trials(config: StudyConfig) -> int:
    """Random trials before TPE models the results: a quarter of the study, from 1 to 10, and
    no fewer than its seeds (which count among them)."""
    return max(len(config.seeds), min(10, max(1, config.trials // 4)))


SMALL_STUDY_TRIALS_PER_BRACKET = 8
"""Hyperband needs about this many trials in each of its brackets to compare within them;
a study with fewer runs one bracket (successive halving) instead."""


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The study's pruner. Its resources count in the budget's unit: Hyperband's rungs start at
    ``budget.eval_every`` and end at the budget. A study too small for Hyperband's brackets
    (see :data:`SMALL_STUDY_TRIALS_PER_BRACKET`) gets successive halving, its one bracket,
    unless the options set ``min_resource``."""
    pruner = config.pruner
    options = dict(pruner.options)
    if pruner.name == "hyperband":
        budget = config.budget
        options.setdefault("min_resource", _resource(budget.eval_every))
        options.setdefault("max_resource", _resource(budget.amount) or "auto")
        eta = options.get("reduction_factor", 3)
        brackets = _brackets(options["min_resource"], options["max_resource"], eta)
        if "min_resource" not in pruner.options and (
            config.trials < SMALL_STUDY_TRIALS_PER_BRACKET * brackets
        ):
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=options["min_resource"], reduction_factor=eta
            )
    try:
        return PRUNERS[pruner.name](**options)
    except (TypeError, ValueError) as error:
        raise SpecError(f"pruner.options: {error}") from None


def _resource(amount: float | None) -> int | None:
    return None if amount is None else max(1, round(amount))


def _brackets(low: int | None, high: int | str, eta: float) -> int:
    """Hyperband's number of brackets for resources from ``low`` to ``high``."""
    if low is None or not isinstance(high, int) or high <= low:
        return 1
    return int(math.floor(math.log(high / low, eta) + 1e-9)) + 1
