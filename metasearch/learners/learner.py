"""A learner: its network, meta-parameters and inner learning rates, used functionally.

The network module is only a template: every forward pass goes through
:func:`torch.func.functional_call` with an explicit parameter dict, so the same code runs the
meta-parameters, one task's adapted parameters, or (under ``vmap``) a whole batch of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from metasearch.learners.init import initialize
from metasearch.learners.inner_lr import InnerLearningRates
from metasearch.learners.networks import Network, at_least_float32, build_network
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskKind

Params = dict[str, Tensor]


@dataclass
class Learner:
    spec: LearnerSpec
    network: Network
    params: Params
    inner_lrs: InnerLearningRates
    task_kind: TaskKind
    n_outputs: int

    @property
    def adapted_names(self) -> list[str]:
        return adapted_names(self.spec, self.params)

    def features(self, params: Params, x: Tensor) -> Tensor:
        body = {n.removeprefix("body."): p for n, p in params.items() if n.startswith("body.")}
        return functional_call(self.network.body, body, (x,)).flatten(1)

    def head(self, params: Params, features: Tensor) -> Tensor:
        head = {n.removeprefix("head."): p for n, p in params.items() if n.startswith("head.")}
        return functional_call(self.network.head, head, (features,))

    def forward(self, params: Params, x: Tensor) -> Tensor:
        return self.head(params, self.features(params, x))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Cross-entropy for classification, mean squared error for regression, in at least
        float32."""
        outputs = at_least_float32(outputs)
        if self.task_kind == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets)

    def meta_tensors(self) -> list[Tensor]:
        """Everything the outer loop learns: parameters and learned inner learning rates."""
        return [*self.params.values(), *self.inner_lrs.learnable()]

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def state_tensors(self) -> dict[str, Tensor]:
        """Every learned tensor, keyed ``param.<name>`` and ``inner_lr.<name>``, for export."""
        tensors = {f"param.{n}": p.detach() for n, p in self.params.items()}
        tensors |= {f"inner_lr.{n}": v.detach() for n, v in self.inner_lrs.values.items()}
        return tensors

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Copies tensors saved by :meth:`state_tensors` into this learner."""
        expected = set(self.state_tensors())
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ValueError(f"tensors do not match the learner: missing {missing}, extra {extra}")
        with torch.no_grad():
            for name, value in tensors.items():
                kind, key = name.split(".", 1)
                target = self.params[key] if kind == "param" else self.inner_lrs.values[key]
                if target.shape != value.shape:
                    raise ValueError(
                        f"{name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                    )
                target.copy_(value)


def build_learner(
    spec: LearnerSpec,
    input_shape: tuple[int, ...],
    n_outputs: int,
    task_kind: TaskKind,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Learner:
    """A freshly initialized learner; the same ``seed`` gives the same initialization."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build_network(spec.architecture, input_shape, n_outputs)
        initialize(network, network.head, spec.init)
    network = network.to(device=device, dtype=dtype).train()
    params = meta_parameters(spec, network)
    inner_lrs = InnerLearningRates.create(spec.inner, params, adapted_names(spec, params))
    return Learner(spec, network, params, inner_lrs, task_kind, n_outputs)


def meta_parameters(spec: LearnerSpec, network: Network) -> Params:
    """Trainable copies of ``network``'s initialized tensors (Prototypical Networks keep no
    head); the module becomes a template whose own tensors are never trained."""
    params = {
        n: p.detach().clone().requires_grad_()
        for n, p in network.named_parameters()
        if not (spec.outer.algorithm == "protonet" and n.startswith("head."))
    }
    for p in network.parameters():
        p.requires_grad_(False)
    return params


def adapted_names(spec: LearnerSpec, params: Params) -> list[str]:
    """Parameters the inner loop adapts: the head alone for ANIL, else all of them."""
    if spec.outer.algorithm == "anil":
        return [n for n in params if n.startswith("head.")]
    return list(params)
