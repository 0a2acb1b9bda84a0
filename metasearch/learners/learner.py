"""A learner: its network, meta-parameters and its algorithm's meta-state, used functionally.

The network module is only a template: every forward pass goes through
:func:`torch.func.functional_call` with an explicit parameter dict, so the same code runs the
meta-parameters, one task's adapted parameters, or (under ``vmap``) a whole batch of them.
Which parameters are kept and adapted, and what meta-state there is (learned inner rates, an
optimizer network, ...), the spec's algorithm says through its registration
(:mod:`metasearch.registry`); the learner stores the meta-state without knowing its kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from metasearch import registry
from metasearch.learners.init import initialize
from metasearch.learners.networks import Network, at_least_float32, build_network
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskKind

Params = dict[str, Tensor]
MetaState = dict[str, Tensor]
"""An algorithm's own tensors, keyed as stored (``inner_lr.<param>``, ``optimizer.<name>``)."""
PARAM = "param."
"""The prefix of the network's parameters among :meth:`Learner.state_tensors`."""


@dataclass
class Learner:
    spec: LearnerSpec
    network: Network
    params: Params
    meta_state: MetaState
    task_kind: TaskKind
    n_outputs: int

    batch_dims = 0
    """Leading group dimensions of the tensors the algorithms see: none for one learner on one
    task (a :class:`~metasearch.learners.grouped.GroupedLearner` has one)."""

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
        """Everything the outer loop learns: the parameters, then the meta-state's learned
        tensors."""
        return [*self.params.values(), *(v for v in self.meta_state.values() if v.requires_grad)]

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def state_tensors(self) -> dict[str, Tensor]:
        """Every tensor that makes this learner, for checkpoints and export: the parameters
        keyed ``param.<name>``, and the meta-state under its own keys."""
        tensors = {f"{PARAM}{n}": p.detach() for n, p in self.params.items()}
        return tensors | {n: v.detach() for n, v in self.meta_state.items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Copies tensors saved by :meth:`state_tensors` into this learner."""
        expected = set(self.state_tensors())
        if set(tensors) != expected:
            missing, extra = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
            raise ValueError(f"tensors do not match the learner: missing {missing}, extra {extra}")
        with torch.no_grad():
            for name, value in tensors.items():
                param = name.removeprefix(PARAM)
                target = self.params[param] if name.startswith(PARAM) else self.meta_state[name]
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
    meta_state = initial_meta_state(spec, params, adapted_names(spec, params))
    return Learner(spec, network, params, meta_state, task_kind, n_outputs)


def meta_parameters(spec: LearnerSpec, network: Network) -> Params:
    """Trainable copies of ``network``'s initialized tensors that the algorithm keeps (e.g.
    Prototypical Networks keep no head); the module becomes a template whose own tensors are
    never trained."""
    algorithm = registry.lookup(spec.outer.algorithm)
    params = {
        n: p.detach().clone().requires_grad_()
        for n, p in network.named_parameters()
        if algorithm.keeps(spec, n)
    }
    for p in network.parameters():
        p.requires_grad_(False)
    return params


def adapted_names(spec: LearnerSpec, params: Params) -> list[str]:
    """The parameters the inner loop adapts, as the algorithm says (the head alone for ANIL)."""
    return registry.lookup(spec.outer.algorithm).adapted_names(spec, list(params))


def initial_meta_state(spec: LearnerSpec, params: Params, adapted: list[str]) -> MetaState:
    """The algorithm's meta-state for ``params``, of their dtype and device."""
    return registry.lookup(spec.outer.algorithm).initial_meta_state(spec, params, adapted)
