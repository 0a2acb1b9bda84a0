"""Prototypical Networks (Snell, Swersky and Zemel, 2017).

The body embeds every image; a class's prototype is the mean embedding of its support images,
and the logits of a query are its negative squared Euclidean distances to the prototypes (or,
with ``outer.distance: cosine``, its scaled cosine similarities to them). No inner loop and no
output layer: the state of a task is its prototypes, so an adapted learner takes tasks of any
number of classes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from metasearch.algorithms.base import AnyLearner, MetaAlgorithm
from metasearch.learners.learner import MetaState, Params
from metasearch.spec import COSINE_SCALE, LearnerSpec


class PrototypicalNetworks(MetaAlgorithm):
    name = "protonet"
    uses = frozenset(
        {"outer.train_ways", "outer.train_shots", "outer.train_query_shots", "outer.distance"}
    )
    requires = {"inner.steps": 0}
    classification_only = True
    any_ways = True

    def check(self, spec: LearnerSpec) -> None:
        if spec.inner.steps != 0:
            raise ValueError("protonet has no inner loop: set inner.steps to 0")
        if spec.outer.train_ways == 1:
            raise ValueError("outer.train_ways must be >= 2")

    def keeps(self, spec: LearnerSpec, name: str) -> bool:
        return not name.startswith("head.")

    def adapted_names(self, spec: LearnerSpec, names: list[str]) -> list[str]:
        return []

    def adapt(
        self,
        learner: AnyLearner,
        params: Params,
        meta: MetaState,
        x: Tensor,
        y: Tensor,
        first_order: bool,
    ) -> Tensor:
        embeddings = learner.features(params, x)
        members = F.one_hot(y, learner.n_outputs).to(embeddings.dtype)  # [..., S, ways]
        return (members.mT @ embeddings) / members.sum(-2)[..., None]

    def predict(self, learner: AnyLearner, params: Params, state: Tensor, x: Tensor) -> Tensor:
        embeddings = learner.features(params, x)
        if learner.spec.outer.distance == "cosine":
            similarity = F.normalize(embeddings, dim=-1) @ F.normalize(state, dim=-1).mT
            return COSINE_SCALE * similarity
        squared = (
            embeddings.pow(2).sum(-1, keepdim=True)
            - 2 * embeddings @ state.mT
            + state.pow(2).sum(-1)[..., None, :]
        )
        return -squared


REGISTERED = (PrototypicalNetworks(),)
