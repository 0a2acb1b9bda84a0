"""The meta-algorithm interface: pure functions of one task, with explicit parameters.

An algorithm says how a learner adapts to one task's support set (:meth:`MetaAlgorithm.adapt`),
how the adapted learner predicts (:meth:`~MetaAlgorithm.predict`) and what the outer loop
minimizes (:meth:`~MetaAlgorithm.outer_objective`); which parameters adapt and which it keeps;
the meta-state it owns besides the network's parameters (learned inner rates, an optimizer
network, ...); its options and what it requires of a spec. How a meta-batch of tasks runs is
an engine's business (:mod:`metasearch.engines`): under ``torch.func.vmap``, where the per-task
functions see one task, or as one hand-batched network, where every tensor has
:attr:`~metasearch.learners.Learner.batch_dims` leading group dimensions (0 or 1) that
shape-dependent code keeps to the left (:func:`task_sum`, :func:`broadcast_to_task`). The
contract tests check every registered algorithm on both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor

from metasearch.learners.grouped import GroupedLearner
from metasearch.learners.learner import Learner, MetaState, Params
from metasearch.learners.networks import has_batch_norm, statistics_from_first
from metasearch.spec import LearnerSpec, NormalizationAtPrediction

AnyLearner = Learner | GroupedLearner
"""What the per-task functions receive: a learner, or a group of (learner, task) pairs."""


class NoOptions(BaseModel):
    """The options model of an algorithm without options of its own."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class MetaGradients(NamedTuple):
    """One meta-step's result: a gradient for each of ``learner.meta_tensors()`` (``None`` where
    unused) and the query loss of every task, detached."""

    grads: list[Tensor | None]
    task_losses: Tensor


class MetaAlgorithm:
    """Base class: registered instances are the algorithms (:mod:`metasearch.registry`).

    Subclasses implement :meth:`adapt` and :meth:`predict`; the defaults give the query-loss
    meta-gradient of MAML-style algorithms and a learner that adapts every parameter.
    """

    name = "base"
    uses: frozenset[str] = frozenset()
    """The algorithm-specific spec fields this algorithm reads (see
    :attr:`metasearch.registry.AlgorithmRules.uses`)."""
    options: type[BaseModel] = NoOptions
    requires: Mapping[str, Any] = {}
    """Dotted spec fields a spec of this algorithm must set, with their values (beyond the
    defaults): e.g. ``inner.steps: 0`` where there is no inner loop."""
    classification_only = False
    """Whether it needs classification tasks."""
    any_ways = False
    """Whether an adapted learner takes tasks of any number of classes, each of which needs a
    support example (classification by class prototypes, no output layer)."""
    query_gradient = True
    """Whether the meta-gradient is the gradient of the query loss (Reptile's is not), so that
    architecture weights can be learned by it."""

    def check(self, spec: LearnerSpec) -> None:
        """Raises ``ValueError`` saying what to change where ``spec`` does not fit."""

    def options_of(self, spec: LearnerSpec) -> Any:
        """``spec``'s ``outer.options`` as this algorithm's options model, defaults filled in."""
        return self.options.model_validate(spec.outer.options)

    def keeps(self, spec: LearnerSpec, name: str) -> bool:
        """Whether the network parameter ``name`` is meta-learned (else it is unused)."""
        return True

    def adapted_names(self, spec: LearnerSpec, names: list[str]) -> list[str]:
        """The parameters, of ``names``, that the inner loop adapts."""
        return names

    def initial_meta_state(
        self, spec: LearnerSpec, params: Params, adapted: list[str]
    ) -> MetaState:
        """The meta-learned (or fixed) tensors the algorithm owns besides the parameters, keyed
        as they are stored (``<kind>.<name>``); those that require grad are meta-learned."""
        return {}

    def first_order(self, spec: LearnerSpec, progress: float) -> bool:
        """Whether the meta-gradient ignores second derivatives at ``progress`` in [0, 1]."""
        return False

    def adapt(
        self,
        learner: AnyLearner,
        params: Params,
        meta: MetaState,
        x: Tensor,
        y: Tensor,
        first_order: bool,
    ) -> Any:
        """The task-specific state learned from one support set ``(x, y)``."""
        raise NotImplementedError

    def predict(self, learner: AnyLearner, params: Params, state: Any, x: Tensor) -> Tensor:
        """Outputs (logits or regression values) for query inputs ``x`` of the same task."""
        raise NotImplementedError

    def task_losses(
        self, learner: AnyLearner, params: Params, state: Any, x: Tensor, y: Tensor, progress: float
    ) -> tuple[Tensor, Tensor]:
        """For one adapted task: what the outer loop minimizes, and the final query loss. By
        default both are the query loss after adaptation."""
        loss = learner.loss(self.predict(learner, params, state, x), y)
        return loss, loss

    def outer_objective(
        self,
        learner: AnyLearner,
        params: Params,
        meta: MetaState,
        support: tuple[Tensor, Tensor],
        query: tuple[Tensor, Tensor],
        progress: float,
    ) -> tuple[Tensor, Tensor]:
        """For one task: the objective whose gradient with respect to the meta-tensors is the
        meta-gradient, and the query loss. By default: adapt to the support set, then
        :meth:`task_losses` on the query set, in the spec's precision."""
        first_order = self.first_order(learner.spec, progress)
        state = self.adapt(learner, params, meta, *support, first_order)
        with query_precision(learner.spec, query[0].device):
            return self.task_losses(learner, params, state, *query, progress)

    def predict_normalized(
        self,
        learner: AnyLearner,
        params: Params,
        state: Any,
        support_x: Tensor,
        x: Tensor,
        normalization: NormalizationAtPrediction | None = None,
    ) -> Tensor:
        """:meth:`predict` with batch normalization by the statistics of the query batch ``x``
        itself (``transductive``) or of the support set (``support``: the support set runs
        before the queries, its statistics alone normalize both, and each query's output
        depends on nothing but the support set and itself); by default as the spec's
        ``architecture.normalization_at_prediction`` says."""
        normalization = normalization or learner.spec.architecture.normalization_at_prediction
        if normalization == "transductive" or not has_batch_norm(learner.network):
            return self.predict(learner, params, state, x)
        examples = learner.batch_dims
        rows = support_x.shape[examples]
        with statistics_from_first(learner.network, rows):
            both = self.predict(learner, params, state, torch.cat([support_x, x], examples))
        return both.narrow(examples, rows, x.shape[examples])


def task_sum(learner: AnyLearner, values: Tensor) -> Tensor:
    """The sum of ``values`` over everything but the group dimensions: one value per task."""
    return values.flatten(learner.batch_dims).sum(-1)


def broadcast_to_task(learner: AnyLearner, values: Tensor, like: Tensor) -> Tensor:
    """Per-task ``values`` (a scalar per task, or a tensor shaped as the start of ``like``'s
    per-task shape) with trailing unit dimensions, so that they broadcast against ``like``."""
    return values.reshape(*values.shape, *[1] * (like.dim() - values.dim()))


def query_precision(spec: LearnerSpec, device: torch.device) -> torch.autocast:
    """For the query pass: ``torch.autocast`` to bfloat16 where the spec's ``outer.precision``
    asks for mixed precision, a context that changes nothing otherwise. The inner loop stays
    float32: bfloat16's rounding of its gradients compounds over the steps (five steps of MAML
    on Omniglot at rate 0.4 lose the meta-gradient's direction), while the query pass, most of
    the arithmetic, only rounds the meta-gradient once. The cache of cast weights is off: the
    query pass may run under the inner loop's transforms, which wrap one weight at several
    levels."""
    mixed = spec.outer.precision == "bfloat16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed, cache_enabled=False)
