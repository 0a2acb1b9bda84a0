"""A learned inner-loop optimizer, after Andrychowicz et al. (2016), "Learning to learn by
gradient descent by gradient descent".

The inner loop's update is a small network shared by every coordinate of every adapted
parameter. From a gradient entry ``g``, preprocessed as in the paper's appendix (its
log-magnitude over ``p = 10`` and its sign, or ``e^p g`` for tiny entries), and the step's
position ``k / K`` in the inner loop, a one-hidden-layer perceptron ``m`` with ``options.hidden``
tanh units corrects plain gradient descent::

    phi <- phi - alpha * (g + m(features(g), k / K))

``alpha`` is the inner rate (``inner.lr``, learned where ``inner.learned``). The output layer
starts at zero, so a fresh learner adapts as MAML does; the network's weights are the
algorithm's meta-state (``optimizer.*``), meta-learned with the initialization by MAML's
second-order meta-gradient. The paper's optimizer is a two-layer LSTM over the same inputs;
over the few inner steps of few-shot adaptation a stateless perceptron keeps the update a
function of the step alone.
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from metasearch.algorithms.base import AnyLearner
from metasearch.algorithms.gradient_based import INNER_LOOP, GradientBased
from metasearch.algorithms.inner_rates import inner_rate
from metasearch.learners.learner import MetaState, Params
from metasearch.spec import LearnerSpec

PREPROCESSING = 10.0
"""The paper's ``p``: gradient entries below ``e^-p`` in magnitude are scaled, not logged."""
FEATURES = 3
PREFIX = "optimizer."
INIT_SEED = 0
"""Seeds the hidden layer's initialization, so that every learner starts from one optimizer."""


class LearnedOptimizerOptions(BaseModel):
    """``hidden``: units of the update network's hidden layer (the paper's LSTM has 20)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    hidden: int = Field(20, ge=1, le=256)


class LearnedOptimizer(GradientBased):
    options = LearnedOptimizerOptions
    uses = INNER_LOOP | {"outer.options.hidden"}

    def __init__(self) -> None:
        super().__init__("learned_optimizer")

    def initial_meta_state(
        self, spec: LearnerSpec, params: Params, adapted: list[str]
    ) -> MetaState:
        hidden = self.options_of(spec).hidden
        like = next(iter(params.values()))
        generator = torch.Generator().manual_seed(INIT_SEED)
        first = torch.randn(FEATURES, hidden, generator=generator) / math.sqrt(FEATURES)
        network = {
            "w1": first,
            "b1": torch.zeros(hidden),
            "w2": torch.zeros(hidden, 1),
            "b2": torch.zeros(1),
        }
        tensors = {
            PREFIX + n: t.to(dtype=like.dtype, device=like.device).requires_grad_()
            for n, t in network.items()
        }
        return super().initial_meta_state(spec, params, adapted) | tensors

    def update(
        self,
        learner: AnyLearner,
        meta: MetaState,
        name: str,
        step: int,
        fast: Tensor,
        grad: Tensor,
    ) -> Tensor:
        batch = grad.shape[: learner.batch_dims]
        features = torch.stack(
            [
                grad.abs().clamp_min(math.exp(-PREPROCESSING)).log() / PREPROCESSING,
                (grad * math.exp(PREPROCESSING)).clamp(-1.0, 1.0),
                torch.full_like(grad, step / learner.spec.inner.steps),
            ],
            -1,
        ).reshape(*batch, -1, FEATURES)
        hidden = torch.tanh(features @ meta[PREFIX + "w1"] + meta[PREFIX + "b1"].unsqueeze(-2))
        correction = hidden @ meta[PREFIX + "w2"] + meta[PREFIX + "b2"].unsqueeze(-2)
        direction = grad + correction.reshape(grad.shape)
        return fast - inner_rate(learner, meta, name, step, grad) * direction


REGISTERED = (LearnedOptimizer(),)
