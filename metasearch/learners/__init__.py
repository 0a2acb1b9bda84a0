"""Learners: networks built from a spec, used functionally with explicit parameters."""

from metasearch.learners.learner import Learner, MetaState, Params, build_learner
from metasearch.learners.networks import Network, build_network

__all__ = ["Learner", "MetaState", "Network", "Params", "build_learner", "build_network"]
