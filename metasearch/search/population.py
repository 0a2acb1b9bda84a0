"""Populations (``population: P`` in a study file): trials of one shape trained together.

A population's first trial samples the whole space. The other trials are asked with its shape
parameters fixed (Optuna's ``PartialFixedSampler`` around the study's sampler), so the sampler
chooses only what a population may vary (:data:`~metasearch.evaluation.population.FREE_FIELDS`:
initialization, inner and meta learning rates, outer optimizer). The round of trials
(:class:`~metasearch.search.rounds.TrialRound`) then meta-trains all of them as one batched
computation, under the one trainer's rules, as it does a single trial.
"""

from __future__ import annotations

import warnings

import optuna

from metasearch.evaluation.population import FREE_FIELDS


def is_free(param: str) -> bool:
    """Whether the Optuna parameter ``param`` may differ between members of a population."""
    return any(param == field or param.startswith(f"{field}.") for field in FREE_FIELDS)


def keeping_shape(
    params: dict[str, object], sampler: optuna.samplers.BaseSampler
) -> optuna.samplers.BaseSampler:
    """``sampler``, with the first member's parameters that a population shares fixed."""
    shape = {name: value for name, value in params.items() if not is_free(name)}
    with warnings.catch_warnings():  # Optuna marks PartialFixedSampler experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.PartialFixedSampler(shape, sampler)
