"""A loaded learner, ready to adapt to a new task, and the learner it adapts into."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import torch
from torch import Tensor

from metasearch import registry
from metasearch.algorithms import MetaAlgorithm, get_algorithm
from metasearch.errors import DataError
from metasearch.evaluation import META_TEST_TASKS, Protocol, Scores, held_out_tasks, score
from metasearch.evaluation.scoring import DEFAULT_EVAL_SEED
from metasearch.export.artifact import RECORDED_PROVENANCE
from metasearch.export.exporting import EXPORTED_NORMALIZATION, export_learner, read_learner
from metasearch.export.transforms import Transform
from metasearch.learners import Learner, Params
from metasearch.learners.networks import has_batch_norm
from metasearch.spec import LearnerSpec, NormalizationAtPrediction
from metasearch.tasks import Split, TaskSource

logger = logging.getLogger(__name__)
NORMALIZATIONS: tuple[str, ...] = get_args(NormalizationAtPrediction)


class AdaptedLearner:
    """A learner adapted to one task's support set; call it on that task's query inputs.

    With batch normalization, ``normalization`` says whose statistics normalize the queries:
    ``support``, the support set's, so each query's output is the same whatever it is passed
    with; ``transductive``, the query batch's own, as in meta-training (pass a task's queries
    together then: one image alone is normalized by itself, and a warning says so).
    """

    def __init__(
        self,
        learner: Learner,
        algorithm: MetaAlgorithm,
        params: Params,
        state: Any,
        support_x: Tensor,
        normalization: NormalizationAtPrediction,
        warn_single: Callable[[], None],
    ) -> None:
        self.learner, self._algorithm, self._params, self._state = learner, algorithm, params, state
        self._support_x, self.normalization = support_x, normalization
        self._input_shape = tuple(support_x.shape[1:])
        self._warn_single = warn_single

    def __call__(self, query_x: Tensor) -> Tensor:
        """Outputs for ``query_x [Q, *input_shape]``: logits ``[Q, ways]`` or values ``[Q, 1]``."""
        x = _inputs(query_x, self._input_shape, self._params, "query_x")
        if len(x) == 1 and self.normalization == "transductive":
            self._warn_single()
        with torch.no_grad():
            return self._algorithm.predict_normalized(
                self.learner, self._params, self._state, self._support_x, x, self.normalization
            )

    def predict(self, query_x: Tensor) -> Tensor:
        """Class indices ``[Q]`` for classification; the values ``[Q, 1]`` for regression."""
        outputs = self(query_x)
        return outputs.argmax(-1) if self.learner.task_kind == "classification" else outputs


class ExportedLearner:
    """A learner read back by :func:`load_learner` (or :meth:`from_pretrained`).

    ``metadata`` is the whole ``learner.json``; ``transform`` turns one raw input (a PIL image,
    a path to one, an array or tensor; numbers for regression) into a tensor of
    ``input_shape``; ``normalization`` is how its adapted learners normalize queries
    (:class:`AdaptedLearner`) and how :meth:`score` scores.
    """

    def __init__(
        self,
        learner: Learner,
        metadata: dict[str, Any],
        input_shape: tuple[int, ...],
        transform: Transform,
        normalization: NormalizationAtPrediction = EXPORTED_NORMALIZATION,
    ) -> None:
        self.learner, self.metadata, self.transform = learner, metadata, transform
        self.input_shape = input_shape
        self.normalization = _checked_normalization(normalization)
        self._algorithm = get_algorithm(learner.spec.outer.algorithm)
        self._warned_single = False

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike[str],
        device: torch.device | str = "cpu",
        normalization: NormalizationAtPrediction | None = None,
    ) -> ExportedLearner:
        """The learner exported to ``folder``, on ``device``, normalizing at prediction as
        ``normalization`` says (by default as recorded at export; folders of format version 2
        predicted transductively); raises :class:`~metasearch.errors.ArtifactError` where the
        export is missing, corrupt or from another format."""
        found = read_learner(folder, device)
        chosen = found.normalization if normalization is None else normalization
        return cls(found.learner, found.metadata, found.input_shape, found.transform, chosen)

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Exports this learner to ``folder`` (replacing an earlier export there) with its
        source, scores and provenance, normalizing at prediction as :attr:`normalization`, in
        the current format; :meth:`from_pretrained` reads it back. Returns the folder."""
        provenance = {  # the versions and time are those of this save
            k: v for k, v in self.metadata["provenance"].items() if k not in RECORDED_PROVENANCE
        }
        return export_learner(
            self.learner,
            folder,
            input_shape=self.input_shape,
            source_description=self.metadata["source"],
            input_transform=self.metadata["input_transform"],
            scores=self.metadata["scores"],
            provenance=provenance,
            normalization=self.normalization,
        )

    @property
    def spec(self) -> LearnerSpec:
        return self.learner.spec

    def __repr__(self) -> str:
        kind = self.learner.task_kind
        task = f"{self.learner.n_outputs}-way {kind}" if kind == "classification" else kind
        test = self.metadata.get("scores", {}).get("test") or {}
        loss = test.get("query_loss")
        scored = f", meta-test query loss {loss:.4g}" if loss is not None else ""
        return (
            f"ExportedLearner({self.spec.outer.algorithm}, {self.spec.architecture.family}, "
            f"{task}, inputs {list(self.input_shape)}{scored})"
        )

    @property
    def any_ways(self) -> bool:
        """Whether this learner takes tasks of any number of classes: Prototypical Networks
        classify by distance to class prototypes and have no head (Snell et al., 2017);
        gradient-based learners have one output per class they were meta-trained on."""
        return self.learner.task_kind == "classification" and self._algorithm.any_ways

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
            meta = {n: v.detach() for n, v in learner.meta_state.items()}
            state = self._algorithm.adapt(learner, params, meta, x, y, True)
        return AdaptedLearner(
            learner, self._algorithm, params, state, x, self.normalization, self._warn_single
        )

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
        (see :mod:`metasearch.evaluation.protocol`), as the evaluator does, normalizing as
        :attr:`normalization`; raises :class:`DataError` where the source's tasks do not fit
        this learner."""
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
        return score(self._algorithm, learner, tasks, normalization=self.normalization)

    def learner_for(self, ways: int) -> Learner:
        """The learner for tasks of ``ways`` classes (or outputs); raises :class:`DataError`
        where this learner takes only the number it was meta-trained for."""
        if ways == self.learner.n_outputs:
            return self.learner
        if not self.any_ways:
            raise DataError(
                f"this {self._algorithm.name} learner has {self.learner.n_outputs} outputs, one "
                f"per class of the tasks it was meta-trained on, so it cannot take {ways}-way "
                f"tasks; only {', '.join(_any_ways_algorithms())} (no head) take another number "
                "of classes"
            )
        return dataclasses.replace(self.learner, n_outputs=ways)  # the head goes unused

    def _warn_single(self) -> None:
        if self._warned_single or not has_batch_norm(self.learner.network):
            return
        self._warned_single = True
        logger.warning(
            "a transductive learner normalizes a query batch by its own statistics, so one "
            "query alone is normalized by itself and predicted badly; pass a task's queries "
            "together, or load it with normalization='support'"
        )

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
        if self._algorithm.any_ways and len(labels) < ways:
            missing = sorted(set(range(ways)) - labels)
            raise ValueError(
                f"{self.spec.outer.algorithm} needs a support example of every class; "
                f"missing {missing}"
            )
        return y.long()


def _any_ways_algorithms() -> list[str]:
    return [a.name for a in map(get_algorithm, registry.names()) if a.any_ways]


def load_learner(
    path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
    normalization: NormalizationAtPrediction | None = None,
) -> ExportedLearner:
    """:meth:`ExportedLearner.from_pretrained`: the learner exported to the directory
    ``path``."""
    return ExportedLearner.from_pretrained(path, device, normalization)


def _checked_normalization(normalization: str) -> NormalizationAtPrediction:
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {normalization!r}"
        )
    return normalization  # type: ignore[return-value]


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
