"""A study trial's architecture, found by differentiable search instead of sampled."""

from __future__ import annotations

import optuna

from metasearch.darts.config import DartsConfig
from metasearch.darts.genotype import genotype_spec
from metasearch.darts.search import search_architecture
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskSource

HISTORY_ATTR = "architecture_weights"
"""The trial user attribute that holds the search's architecture-weight history."""


def darts_architecture(
    trial: optuna.Trial,
    spec: LearnerSpec,
    source: TaskSource,
    config: DartsConfig,
    seed: int = 0,
) -> LearnerSpec:
    """``spec`` (as the trial sampled it) with the architecture that a differentiable search
    finds for its meta-algorithm and hyperparameters; the search's history goes to the trial's
    ``architecture_weights`` attribute. The caller meta-trains and scores the returned spec as
    any other."""
    result = search_architecture(spec, source, config, seed)
    trial.set_user_attr(HISTORY_ATTR, result.history)
    return genotype_spec(spec, result.genotype, config.channels)
