"""Inner-loop learning rates at any granularity, fixed or meta-learned: the meta-state of the
gradient-based algorithms.

Each adapted parameter ``name`` has a rate tensor ``inner_lr.<name>`` of shape ``[S, *shape]``:
``S`` is the number of inner steps for per-step rates (MAML++, Antoniou et al., 2019) and 1
otherwise; ``shape`` is the parameter's shape for Meta-SGD's per-parameter rates (Li et al.,
2017) and empty otherwise. The scalar granularity keeps one tensor, ``inner_lr.*``, shared by
every parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metasearch.algorithms.base import AnyLearner, broadcast_to_task
from metasearch.learners.learner import MetaState, Params
from metasearch.spec import InnerLoopSpec

PREFIX = "inner_lr."
SHARED = f"{PREFIX}*"


def initial_rates(spec: InnerLoopSpec, params: Params, adapted: list[str]) -> MetaState:
    """Rates for the parameters named ``adapted``, all starting at ``spec.lr``; they require
    grad where ``spec.learned``."""
    rows = spec.steps if spec.granularity == "per_layer_per_step" else 1
    any_param = next(iter(params.values()))
    like = {"dtype": any_param.dtype, "device": any_param.device}
    if spec.granularity == "scalar":
        rates = {SHARED: torch.full((1,), spec.lr, **like)}
    elif spec.granularity == "per_parameter":
        rates = {PREFIX + n: torch.full((1, *params[n].shape), spec.lr, **like) for n in adapted}
    else:
        rates = {PREFIX + n: torch.full((rows,), spec.lr, **like) for n in adapted}
    return {n: v.requires_grad_(spec.learned) for n, v in rates.items()}


def inner_rate(learner: AnyLearner, meta: MetaState, name: str, step: int, like: Tensor) -> Tensor:
    """The rate of parameter ``name`` at inner step ``step``, broadcastable against ``like``
    (the parameter, or its gradient)."""
    rate = meta.get(SHARED)
    if rate is None:
        rate = meta[PREFIX + name]
    per_step = learner.spec.inner.granularity == "per_layer_per_step"
    rate = rate.select(learner.batch_dims, step if per_step else 0)
    return broadcast_to_task(learner, rate, like)
