"""Prototypical Networks (Snell, Swersky and Zemel, 2017).

The body embeds every image; a class's prototype is the mean embedding of its support images,
and the logits of a query are its negative squared Euclidean distances to the prototypes (or,
with ``outer.distance: cosine``, its scaled cosine similarities to them). No inner loop: the
state of a task is its prototypes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from metasearch.algorithms.base import AnyLearner, MetaAlgorithm
from metasearch.learners.learner import Params
from metasearch.spec import COSINE_SCALE


class PrototypicalNetworks(MetaAlgorithm):
    name = "protonet"

    def adapt(
        self, learner: AnyLearner, params: Params, x: Tensor, y: Tensor, first_order: bool
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
