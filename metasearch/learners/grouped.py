"""Many learners of one shape, each on its own tasks, run as one hand-batched network.

``G`` groups, each a (learner, task) pair, are folded into one computation without ``vmap``:
every parameter gets a leading group dimension ``[G, *shape]``, and every input batch one too
(``[G, N, *input]``). Feature maps keep the groups in the channel dimension, ``[N, G*C, H, W]``
in channels-last memory, so that a convolution is one grouped convolution (``groups=G``), and
batch, layer and instance normalization are the fused kernels over ``G*C`` channels: each
group is still normalized by its own statistics (of its first rows alone under
:func:`~metasearch.learners.networks.statistics_from_first`). Dense layers are batched matrix
products.

This is the same function as running each group's network alone, with plain autograd through
it; on the CPU it avoids the slow batching rules of pooling and normalization under ``vmap``.
A first convolution and its batch normalization run as one convolution with the normalization
folded into its weights (:mod:`metasearch.learners.input_block`).
Networks with modules not listed in :data:`_MAPS` or :data:`_VECTORS` are not supported
(:func:`supports`); the vmap engine runs those (:mod:`metasearch.engines`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metasearch.learners.input_block import fold_input_norm, folds_input_norm
from metasearch.learners.learner import Learner, MetaState, Params
from metasearch.learners.networks import ACTIVATIONS, BatchStatNorm, Network, at_least_float32
from metasearch.spec import LearnerSpec
from metasearch.tasks.base import TaskBatch

Opt = Tensor | None
Layer = Callable[[nn.Module, Tensor, Opt, Opt, int], Tensor]
"""``(module, h, weight, bias, groups)``: one module of the body on folded activations."""


def _conv(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    assert isinstance(module, nn.Conv2d) and weight is not None
    flat_bias = None if bias is None else bias.flatten()
    out = F.conv2d(
        h, weight.flatten(0, 1), flat_bias, module.stride, module.padding, module.dilation, g
    )
    return out.contiguous(memory_format=torch.channels_last)


def _batch_norm_maps(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    assert isinstance(module, BatchStatNorm) and weight is not None and bias is not None
    if module.statistics_rows is None:
        return F.batch_norm(h, None, None, weight.flatten(), bias.flatten(), True, 0.0, module.eps)
    h = at_least_float32(h)
    reference = h[: module.statistics_rows]
    mean = reference.mean((0, 2, 3), keepdim=True)
    var = (reference - mean).pow(2).mean((0, 2, 3), keepdim=True)
    scale = torch.rsqrt(var + module.eps) * weight.reshape(1, -1, 1, 1)
    return (h - mean) * scale + bias.reshape(1, -1, 1, 1)


def _group_norm(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    assert isinstance(module, nn.GroupNorm) and weight is not None and bias is not None
    return F.group_norm(h, g * module.num_groups, weight.flatten(), bias.flatten(), module.eps)


def _elementwise(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    return module(h)


def _linear(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    assert weight is not None
    out = h @ weight.mT
    return out if bias is None else out + bias[:, None, :]


def _batch_norm_rows(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    assert isinstance(module, BatchStatNorm) and weight is not None and bias is not None
    h = at_least_float32(h)
    reference = h if module.statistics_rows is None else h[:, : module.statistics_rows]
    mean = reference.mean(1, keepdim=True)
    var = (reference - mean).pow(2).mean(1, keepdim=True)
    return (h - mean) * torch.rsqrt(var + module.eps) * weight[:, None] + bias[:, None]


def _layer_norm(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    assert isinstance(module, nn.LayerNorm) and weight is not None and bias is not None
    normalized = F.layer_norm(h, module.normalized_shape, eps=module.eps)
    return normalized * weight[:, None] + bias[:, None]


def _flatten(module: nn.Module, h: Tensor, weight: Opt, bias: Opt, g: int) -> Tensor:
    return h.flatten(2)


_ACTIVATIONS: dict[type[nn.Module], Layer] = {kind: _elementwise for kind in ACTIVATIONS.values()}
_MAPS: dict[type[nn.Module], Layer] = {
    nn.Conv2d: _conv,
    BatchStatNorm: _batch_norm_maps,
    nn.GroupNorm: _group_norm,
    nn.MaxPool2d: _elementwise,
    nn.AvgPool2d: _elementwise,
    nn.AdaptiveAvgPool2d: _elementwise,
    **_ACTIVATIONS,
}
"""Layers on feature maps ``[N, G*C, H, W]``."""
_VECTORS: dict[type[nn.Module], Layer] = {
    nn.Flatten: _flatten,
    nn.Linear: _linear,
    BatchStatNorm: _batch_norm_rows,
    nn.LayerNorm: _layer_norm,
    **_ACTIVATIONS,
}
"""Layers on vectors ``[G, N, F]`` (the ``mlp`` family)."""


_MONOTONE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh)


def _pool_first(modules: list[nn.Module]) -> list[int]:
    """The order to run ``modules`` in: a non-decreasing activation followed by max pooling
    commutes with it, and pooling first applies the activation to a quarter of the values."""
    order = list(range(len(modules)))
    for i in range(len(modules) - 1):
        activation, pool = modules[order[i]], modules[order[i + 1]]
        monotone = isinstance(activation, _MONOTONE) and (
            getattr(activation, "negative_slope", 0.0) >= 0
            and getattr(activation, "alpha", 0.0) >= 0
        )
        if monotone and isinstance(pool, nn.MaxPool2d):
            order[i], order[i + 1] = order[i + 1], order[i]
    return order


def has_maps(network: nn.Module) -> bool:
    """Whether the body works on feature maps (the convolutional family) rather than vectors."""
    return not isinstance(next(iter(network.body), None), nn.Flatten)


def supports(network: nn.Module) -> bool:
    """Whether :class:`GroupedLearner` can run ``network``."""
    return not unsupported(network)


def unsupported(network: nn.Module) -> list[str]:
    """What in ``network`` :class:`GroupedLearner` cannot run (module type names), if anything."""
    if not isinstance(network, Network) or not isinstance(network.body, nn.Sequential):
        return [
            type(network).__name__ if not isinstance(network, Network) else "a non-sequential body"
        ]
    layers = _MAPS if has_maps(network) else _VECTORS
    return sorted({type(m).__name__ for m in network.body if type(m) not in layers})


class GroupedLearner:
    """``learners`` (one shape, e.g. a population) on ``tasks`` tasks each: group ``p * tasks +
    t`` is learner ``p`` on task ``t``. It has the :class:`Learner` methods the algorithms use,
    but every tensor has a leading group dimension and :meth:`loss` is one loss per group."""

    batch_dims = 1

    def __init__(self, learners: Sequence[Learner], tasks: int) -> None:
        first = learners[0]
        self.learners, self.tasks, self.groups = list(learners), tasks, len(learners) * tasks
        self.spec: LearnerSpec = first.spec
        self.network, self.task_kind = first.network, first.task_kind
        self.n_outputs = first.n_outputs
        self.adapted_names = first.adapted_names
        self._maps = has_maps(first.network)
        self._order = _pool_first(list(first.network.body))
        self._fold = self._maps and folds_input_norm(list(first.network.body))

    def params(self, detach: bool = False) -> Params:
        """Every learner's parameters, repeated for each of its tasks: ``[G, *shape]``."""
        stacked = {
            name: torch.stack([learner.params[name] for learner in self.learners])
            for name in self.learners[0].params
        }
        return {n: self._per_task(p.detach() if detach else p) for n, p in stacked.items()}

    def meta_state(self, detach: bool = False) -> MetaState:
        """Every learner's meta-state, repeated for each of its tasks: ``[G, *shape]``."""
        stacked = {
            name: torch.stack([learner.meta_state[name] for learner in self.learners])
            for name in self.learners[0].meta_state
        }
        return {n: self._per_task(v.detach() if detach else v) for n, v in stacked.items()}

    def features(self, params: Params, x: Tensor) -> Tensor:
        """Body outputs ``[G, N, F]`` for inputs ``[G, N, *input]``."""
        groups, n = x.shape[:2]
        if self._maps:
            h = x.transpose(0, 1).reshape(n, -1, *x.shape[3:])
            h = h.contiguous(memory_format=torch.channels_last)
            layers = _MAPS
        else:
            h, layers = x, _VECTORS
        order = self._order
        if self._fold:  # the order keeps the first convolution and its normalization in place
            body = self.network.body
            names = ("body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias")
            block = [params.get(name) for name in names]
            rows = body[1].statistics_rows
            reference = h if rows is None else h[:rows]
            weight, bias = fold_input_norm(body[0], body[1], reference, block, groups)
            h = _conv(body[0], h, weight, bias, groups)
            order = order[2:]
        for index in order:
            module = self.network.body[index]
            weight, bias = params.get(f"body.{index}.weight"), params.get(f"body.{index}.bias")
            h = layers[type(module)](module, h, weight, bias, groups)
        if self._maps:
            h = h.reshape(n, groups, -1).transpose(0, 1)
        return h

    def head(self, params: Params, features: Tensor) -> Tensor:
        return features @ params["head.weight"].mT + params["head.bias"][:, None, :]

    def forward(self, params: Params, x: Tensor) -> Tensor:
        return self.head(params, self.features(params, x))

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """Each group's loss ``[G]``: cross-entropy or mean squared error over its batch, in at
        least float32."""
        outputs = at_least_float32(outputs)
        if self.task_kind == "classification":
            losses = F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), reduction="none")
            return losses.view(self.groups, -1).mean(1)
        return (outputs - targets).pow(2).flatten(1).mean(1)

    def repeat(self, batch: TaskBatch) -> TaskBatch:
        """``batch`` (``tasks`` tasks) once for each learner: ``[G, ...]`` tensors."""
        if len(self.learners) == 1:
            return batch
        return TaskBatch(*(t.repeat(len(self.learners), *[1] * (t.dim() - 1)) for t in batch))

    def per_learner(self, values: Tensor) -> Tensor:
        """``[G, ...]`` values as ``[learners, tasks, ...]``."""
        return values.unflatten(0, (len(self.learners), self.tasks))

    def _per_task(self, stacked: Tensor) -> Tensor:
        """``[P, ...]`` -> ``[P * tasks, ...]``, each learner's entry repeated for its tasks."""
        return stacked[:, None].expand(-1, self.tasks, *stacked.shape[1:]).flatten(0, 1)
