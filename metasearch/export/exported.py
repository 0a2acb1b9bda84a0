"""A loaded learner, ready to adapt to a new task, and the learner it adapts into."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from metasearch.algorithms import MetaAlgorithm, get_algorithm
from metasearch.errors import DataError
from metasearch.evaluation import META_TEST_TASKS, Protocol, Scores, held_out_tasks, score
from metasearch.evaluation.scoring import DEFAULT_EVAL_SEED
from metasearch.export.transforms import Transform
from metasearch.learners import Learner, Params
from metasearch.spec import LearnerSpec
from metasearch.tasks import Split, TaskSource


class AdaptedLearner:
    """A learner adapted to one task's support set; call it on that task's query inputs.

    With batch normalization a query batch is normalized by its own statistics, as in
    meta-training and scoring, so pass a task's queries together rather than one at a time.
    """

    def __init__(
        self,
        learner: Learner,
        algorithm: MetaAlgorithm,
        params: Params,
        state: Any,
        input_shape: tuple[int, ...],
    ) -> None:
        self.learner, self._algorithm, self._params, self._state = learner, algorithm, params, state
        self._input_shape = input_shape

    def __call__(self, query_x: Tensor) -> Tensor:
        """Outputs for ``query_x [Q, *input_shape]``: logits ``[Q, ways]`` or values ``[Q, 1]``."""
        x = _inputs(query_x, self._input_shape, self._params, "query_x")
        with torch.no_grad():
            return self._algorithm.predict(self.learner, self._params, self._state, x)

    def predict(self, query_x: Tensor) -> Tensor:
        """Class indices ``[Q]`` for classification; the values ``[Q, 1]`` for regression."""
        outputs = self(query_x)
        return outputs.argmax(-1) if self.learner.task_kind == "classification" else outputs


class ExportedLearner:
    """A learner read back by :func:`~metasearch.export.load_learner`.

    ``metadata`` is the whole ``learner.json``; ``transform`` turns one raw input (a PIL image,
    or numbers for regression) into a tensor of ``input_shape``.
    """

    def __init__(
        self,
        learner: Learner,
        metadata: dict[str, Any],
        input_shape: tuple[int, ...],
        transform: Transform,
    ) -> None:
        self.learner, self.metadata, self.transform = learner, metadata, transform
        self.input_shape = input_shape
        self._algorithm = get_algorithm(learner.spec.outer.algorithm)

    @property
    def spec(self) -> LearnerSpec:
        return self.learner.spec

    def __repr__(self) -> str:
        kind = self.learner.task_kind
        task = f"{self.learner.n_outputs}-way {kind}" if kind == "classification" else kind
        test = self.metadata.get("scores", {}).get("test") or {}
        scored = f", meta-test loss {test['loss']:.4g}" if test.get("loss") is not None else ""
        return (
            f"ExportedLearner({self.spec.outer.algorithm}, {self.spec.architecture.family}, "
            f"{task}, inputs {list(self.input_shape)}{scored})"
        )

    @property
    def any_ways(self) -> bool:
        """Whether this learner takes tasks of any number of classes: Prototypical Networks
        classify by distance to class prototypes and have no head (Snell et al., 2017);
        gradient-based learners have one output per class they were meta-trained on."""
        return self.learner.task_kind == "classification" and self._algorithm.name == "protonet"

    def adapt(self, support_x: Tensor, support_y: Tensor) -> AdaptedLearner:
        """Adapts to one task: ``support_x [S, *input_shape]`` with class labels ``[S]`` in
        ``0..ways-1`` (any number of classes where :attr:`any_ways`), or regression targets
        ``[S, 1]``. Raises ``ValueError`` on bad input."""
        params = {n: p.detach() for n, p in self.learner.params.items()}
        x = _inputs(support_x, self.input_shape, params, "support_x")
        if len(x) == 0:
            raise ValueError("support_x holds no examples; pass at least one per class")
        y = self._targets(support_y, len(x)).to(x.device)
        learner = self.learner_for(int(y.max()) + 1) if self.any_ways else self.learner
        with torch.no_grad():  # torch.func.grad inside adapt ignores the outer no_grad
            state = self._algorithm.adapt(learner, params, x, y, True)
        return AdaptedLearner(learner, self._algorithm, params, state, self.input_shape)

    def score(
        self,
        source: TaskSource,
        split: Split = "test",
        n_tasks: int = META_TEST_TASKS,
        seed: int = DEFAULT_EVAL_SEED,
        protocol: str = "unrotated",
        classes_from: str | None = None,
    ) -> Scores:
        """Scores on ``n_tasks`` seeded tasks of ``source`` drawn by the meta-test ``protocol``
        (see :mod:`metasearch.evaluation.protocol`), as the evaluator does; raises
        :class:`DataError` where the source's tasks do not fit this learner."""
        source = Protocol(protocol, n_tasks, seed, classes_from).source(source, split)
        exported = (self.learner.task_kind, self.input_shape)
        given = (source.kind, tuple(source.input_shape))
        if given != exported:
            raise DataError(
                "the task source does not fit this learner: it gives {} tasks with inputs {}, "
                "the learner was exported for {} tasks with inputs {}; build the source with the "
                "learner's settings".format(*given, *exported)
            )
        learner = self.learner_for(source.n_outputs)
        device = next(iter(self.learner.params.values())).device
        tasks = held_out_tasks(source, split, n_tasks, seed).to(device)
        return score(self._algorithm, learner, tasks)

    def learner_for(self, ways: int) -> Learner:
        """The learner for tasks of ``ways`` classes (or outputs); raises :class:`DataError`
        where this learner takes only the number it was meta-trained for."""
        if ways == self.learner.n_outputs:
            return self.learner
        if not self.any_ways:
            raise DataError(
                f"this {self._algorithm.name} learner has {self.learner.n_outputs} outputs, one "
                f"per class of the tasks it was meta-trained on, so it cannot take {ways}-way "
                "tasks; only Prototypical Networks (protonet, no head) take another number of "
                "classes"
            )
        return dataclasses.replace(self.learner, n_outputs=ways)  # the head goes unused

    def _targets(self, support_y: Tensor, n: int) -> Tensor:
        y = torch.as_tensor(support_y)
        if self.learner.task_kind == "regression":
            if y.shape != (n, self.learner.n_outputs):
                raise ValueError(
                    f"support_y must be regression targets [{n}, 1], got {list(y.shape)}"
                )
            _check_finite(y, "support_y")
            return y.float()
        if y.shape != (n,) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise ValueError(
                f"support_y must be {n} integer class labels [S], got {y.dtype} {list(y.shape)}"
            )
        labels = set(y.tolist())
        ways = max(max(labels) + 1, 2) if self.any_ways else self.learner.n_outputs
        if not labels <= set(range(ways)):
            raise ValueError(
                f"support_y labels must be 0..{ways - 1} for this {ways}-way learner, got "
                f"{sorted(labels)}; number the task's classes from 0"
            )
        if self.spec.outer.algorithm == "protonet" and len(labels) < ways:
            missing = sorted(set(range(ways)) - labels)
            raise ValueError(f"protonet needs a support example of every class; missing {missing}")
        return y.long()


def _inputs(x: Tensor, input_shape: tuple[int, ...], params: Params, name: str) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() != len(input_shape) + 1 or tuple(x.shape[1:]) != input_shape:
        raise ValueError(
            f"{name} must be a batch [N, {', '.join(map(str, input_shape))}], got {list(x.shape)}"
        )
    _check_finite(x, name)
    like = next(iter(params.values()))
    return x.to(device=like.device, dtype=like.dtype)


def _check_finite(values: Tensor, name: str) -> None:
    """Raises ``ValueError`` where ``values`` are complex or not all finite."""
    if values.is_complex():
        raise ValueError(f"{name} must hold real numbers, got {values.dtype}")
    if values.is_floating_point() and not values.isfinite().all():
        raise ValueError(f"{name} holds NaN or infinite values; pass finite numbers")
