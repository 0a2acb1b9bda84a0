"""Inner-loop learning rates at any granularity, fixed or meta-learned.

Each adapted parameter tensor ``name`` has a rate tensor of shape ``[S, *shape]``: ``S`` is the
number of inner steps for per-step rates and 1 otherwise; ``shape`` is the parameter's shape for
Meta-SGD's per-parameter rates and empty otherwise. The scalar granularity keeps a single tensor
under the key ``"*"`` shared by every parameter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from metasearch.spec import InnerLoopSpec

SHARED = "*"


class InnerLearningRates:
    def __init__(self, values: dict[str, Tensor], per_step: bool) -> None:
        self.values, self.per_step = values, per_step

    @classmethod
    def create(
        cls, spec: InnerLoopSpec, params: dict[str, Tensor], adapted: list[str]
    ) -> InnerLearningRates:
        """Rates for the parameters named ``adapted``, all starting at ``spec.lr``."""
        rows = spec.steps if spec.granularity == "per_layer_per_step" else 1
        any_param = next(iter(params.values()))
        like = {"dtype": any_param.dtype, "device": any_param.device}
        if spec.granularity == "scalar":
            values = {SHARED: torch.full((1,), spec.lr, **like)}
        elif spec.granularity == "per_parameter":
            values = {n: torch.full((1, *params[n].shape), spec.lr, **like) for n in adapted}
        else:
            values = {n: torch.full((rows,), spec.lr, **like) for n in adapted}
        if spec.learned:
            values = {n: v.requires_grad_() for n, v in values.items()}
        return cls(values, per_step=rows > 1)

    def __call__(self, name: str, step: int) -> Tensor:
        """The rate for parameter ``name`` at inner step ``step``."""
        rate = self.values.get(SHARED)
        if rate is None:
            rate = self.values[name]
        return rate[step if self.per_step else 0]

    def learnable(self) -> list[Tensor]:
        return [v for v in self.values.values() if v.requires_grad]
