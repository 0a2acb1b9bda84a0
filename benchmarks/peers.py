"""Other libraries' MAML, on the same network, the same initialization and the same batches.

Each peer runs the standard way its library documents, one task after another, on an ordinary
``nn.Module`` copy of the learner's network in which metasearch's batch-statistics norm becomes
``nn.BatchNorm2d(track_running_stats=False)`` (per-task batch statistics, as in metasearch). The
copy's parameters replace the learner's own, so ``learner.meta_tensors()`` are the tensors the
peer trains and the benchmark's Adam step and gradient check apply unchanged. In mixed
precision each runs its query pass under ``torch.autocast(dtype=bfloat16)`` and its inner loop
in float32, as metasearch does (the learner's spec says which).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metasearch.algorithms.base import query_precision
from metasearch.learners import Learner
from metasearch.learners.networks import BatchStatNorm
from metasearch.tasks import TaskBatch

MetaStep = Callable[[TaskBatch], None]


class Unavailable(Exception):
    """A peer library cannot be imported; the message says why."""


def import_peer(module: str) -> Any:
    """The peer's top-level module, or :class:`Unavailable` with the import error."""
    try:
        return importlib.import_module(module)
    except Exception as error:  # a broken install raises anything, not only ImportError
        raise Unavailable(f"not installed: {type(error).__name__}: {error}") from error


def peer_version(module: str) -> str:
    try:
        return str(getattr(import_peer(module), "__version__", "?"))
    except Unavailable:
        return ""


def plain_module(learner: Learner) -> nn.Module:
    """A copy of ``learner.network`` with ``nn.BatchNorm2d`` norms, holding the learner's
    parameters; the learner is changed to train the copy's parameters instead."""
    network = copy.deepcopy(learner.network)
    for name, module in list(network.named_modules()):
        if isinstance(module, BatchStatNorm):
            parent, _, child = name.rpartition(".")
            norm = nn.BatchNorm2d(module.weight.shape[0], module.eps, track_running_stats=False)
            setattr(network.get_submodule(parent), child, norm)
    network = network.to(next(iter(learner.params.values())))
    with torch.no_grad():
        for name, parameter in network.named_parameters():
            parameter.copy_(learner.params[name])
            parameter.requires_grad_()
    learner.params.update(dict(network.named_parameters()))
    return network.train()


def _scalar_inner_lr(learner: Learner) -> float:
    spec = learner.spec.inner
    if spec.learned or spec.granularity != "scalar":
        raise ValueError("the peers take one fixed inner learning rate")
    return spec.lr


def learn2learn_step(learner: Learner, first_order: bool) -> MetaStep:
    """``l2l.algorithms.MAML``: ``clone()`` and ``adapt()`` per task, then the query loss."""
    l2l = import_peer("learn2learn")
    maml = l2l.algorithms.MAML(
        plain_module(learner), lr=_scalar_inner_lr(learner), first_order=first_order
    )
    steps = learner.spec.inner.steps

    def step(batch: TaskBatch) -> None:
        for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
            fast = maml.clone()
            for _ in range(steps):
                fast.adapt(F.cross_entropy(fast(support_x), support_y))
            with query_precision(learner.spec, query_x.device):
                outputs = fast(query_x)
            (F.cross_entropy(outputs.float(), query_y) / batch.n_tasks).backward()

    return step


def higher_step(learner: Learner, first_order: bool) -> MetaStep:
    """``higher.innerloop_ctx`` per task around an SGD optimizer; first order detaches the inner
    gradients through ``grad_callback``."""
    higher = import_peer("higher")
    network = plain_module(learner)
    inner = torch.optim.SGD(network.parameters(), lr=_scalar_inner_lr(learner))
    steps = learner.spec.inner.steps
    callback = (lambda grads: [g.detach() for g in grads]) if first_order else None

    def step(batch: TaskBatch) -> None:
        for support_x, support_y, query_x, query_y in zip(*batch, strict=True):
            with higher.innerloop_ctx(network, inner, copy_initial_weights=False) as (fast, opt):
                for _ in range(steps):
                    opt.step(F.cross_entropy(fast(support_x), support_y), grad_callback=callback)
                with query_precision(learner.spec, query_x.device):
                    outputs = fast(query_x)
                (F.cross_entropy(outputs.float(), query_y) / batch.n_tasks).backward()

    return step
