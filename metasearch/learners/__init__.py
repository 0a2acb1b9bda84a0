"""Learners: networks built from a spec, used functionally with explicit parameters."""

from metasearch.learners.inner_lr import InnerLearningRates
from metasearch.learners.learner import Learner, Params, build_learner
from metasearch.learners.networks import Network, build_network

__all__ = ["InnerLearningRates", "Learner", "Network", "Params", "build_learner", "build_network"]
