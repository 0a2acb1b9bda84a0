"""The learner spec: one serializable description of a candidate few-shot learner.

A spec fixes the architecture, the initialization, the inner loop and the meta-algorithm with
its outer loop. It says nothing about the tasks (ways, shots): those belong to the task source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from metasearch.errors import SpecError

Algorithm = Literal["maml", "fomaml", "reptile", "anil", "metasgd", "mamlpp", "protonet"]
ALGORITHMS: tuple[str, ...] = Algorithm.__args__  # type: ignore[attr-defined]
Operation = Literal[
    "none",
    "skip_connect",
    "conv_3x3",
    "conv_5x5",
    "sep_conv_3x3",
    "dil_conv_3x3",
    "max_pool_3x3",
    "avg_pool_3x3",
]
PRIMITIVES: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]
"""The candidate operations of a cell edge; ``none`` (the zero operation) only in the search."""
CellKind = Literal["normal", "reduce"]
Precision = Literal["float32", "bfloat16"]
COSINE_SCALE = 10.0
"""Prototypical Networks with ``distance: cosine``: logits are this times the cosine similarity
(an unscaled cosine in [-1, 1] gives too flat a softmax to learn)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Genotype(_Frozen):
    """A discrete cell architecture, as differentiable architecture search derives it.

    ``normal`` and ``reduce`` list each intermediate node of the normal and the reduction cell as
    its incoming edges ``(operation, input)``: input 0 and 1 are the cell's two inputs (the
    outputs of the two previous cells), input ``k + 2`` is the cell's node ``k``. A cell outputs
    its nodes concatenated along channels. ``layout`` gives the kind of each cell in order;
    a reduction cell halves the feature map and doubles the channels.
    """

    normal: tuple[tuple[tuple[Operation, int], ...], ...]
    reduce: tuple[tuple[tuple[Operation, int], ...], ...]
    layout: tuple[CellKind, ...]

    @field_validator("normal", "reduce")
    @classmethod
    def _valid_nodes(
        cls, nodes: tuple[tuple[tuple[str, int], ...], ...]
    ) -> tuple[tuple[tuple[str, int], ...], ...]:
        if not nodes:
            raise ValueError("a cell needs at least one node")
        for k, edges in enumerate(nodes):
            inputs = [j for _, j in edges]
            if not edges or len(set(inputs)) < len(inputs):
                raise ValueError(f"node {k} needs at least one edge, each from another input")
            if any(not 0 <= j < k + 2 for j in inputs):
                raise ValueError(f"node {k} may only read inputs 0 to {k + 1}")
            if any(op == "none" for op, _ in edges):
                raise ValueError("the zero operation 'none' has no place in a derived cell")
        return nodes

    @field_validator("layout")
    @classmethod
    def _some_cells(cls, layout: tuple[str, ...]) -> tuple[str, ...]:
        if not layout:
            raise ValueError("needs at least one cell")
        return layout


NormalizationAtPrediction = Literal["transductive", "support"]
"""Whose statistics batch normalization uses when an adapted learner predicts: the query
batch's or the support set's (:class:`ArchitectureSpec`)."""


class ArchitectureSpec(_Frozen):
    """The network. ``conv``: blocks of conv -> norm -> activation -> pool; ``mlp``: dense layers;
    ``cells``: a stem conv, then the cells of ``genotype`` (:mod:`metasearch.darts`).

    ``widths`` gives one entry per block (conv channels or hidden units), so depth is its length;
    for ``cells`` it is one entry, the channels of the stem and the first cells. ``kernel_size``
    and ``pooling`` apply to the convolutional family only; ``cells`` use ReLU and batch
    normalization. ``head`` is ``flatten`` (flatten the last feature map, then a linear layer) or
    ``gap`` (global average pooling, then a linear layer).

    ``normalization_at_prediction`` is where batch normalization takes its statistics when
    the adapted learner predicts a query set: ``transductive``, the query batch's own (MAML's
    protocol: a query's output depends on the other queries it is predicted with), or
    ``support``, the support set's, so that every query is predicted on its own (MetaBN,
    Bronskill et al., 2020). It applies to scoring, not to meta-training's query loss, and
    changes nothing without batch normalization.
    """

    family: Literal["conv", "mlp", "cells"] = "conv"
    widths: tuple[int, ...] = (64, 64, 64, 64)
    kernel_size: Literal[1, 3, 5, 7] = 3
    normalization: Literal["batch", "layer", "instance", "none"] = "batch"
    activation: Literal["relu", "leaky_relu", "elu", "gelu", "silu", "tanh"] = "relu"
    pooling: Literal["max", "avg", "strided", "none"] = "max"
    head: Literal["flatten", "gap"] = "flatten"
    genotype: Genotype | None = None
    normalization_at_prediction: NormalizationAtPrediction = "transductive"

    @field_validator("widths")
    @classmethod
    def _positive_widths(cls, widths: tuple[int, ...]) -> tuple[int, ...]:
        if not widths or any(w < 1 for w in widths):
            raise ValueError("needs at least one block, each of width >= 1")
        return widths

    @model_validator(mode="after")
    def _family_options(self) -> ArchitectureSpec:
        if self.family == "mlp" and self.normalization == "instance":
            raise ValueError("instance normalization needs feature maps; use batch, layer or none")
        if self.family == "mlp" and self.head == "gap":
            raise ValueError("the gap head needs feature maps; use head: flatten with an mlp")
        if (self.family == "cells") != (self.genotype is not None):
            raise ValueError("the cells family needs a genotype, and only it takes one")
        if self.family == "cells" and (len(self.widths) != 1 or self.widths[0] % 2):
            raise ValueError("the cells family takes one even width: the stem's channels")
        if self.family == "cells" and (self.normalization, self.activation) != ("batch", "relu"):
            raise ValueError("the cells family uses batch normalization and relu")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_genotype(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leaves ``genotype`` out where there is none and ``normalization_at_prediction`` where
        it is the default, so that specs without them serialize (and resume) as before."""
        data = handler(self)
        if self.genotype is None:
            data.pop("genotype", None)
        if self.normalization_at_prediction == "transductive":
            data.pop("normalization_at_prediction", None)
        return data


class InitSpec(_Frozen):
    """How the meta-parameters start.

    ``gain`` scales every scheme: kaiming and normal draw with standard deviation
    ``gain * sqrt(2 / fan_in)`` and ``gain / sqrt(fan_in)``; xavier and orthogonal take it as
    their gain. ``zero_head`` starts the output layer at zero, so every class starts equal.
    """

    scheme: Literal["kaiming", "xavier", "orthogonal", "normal"] = "kaiming"
    gain: float = 1.0
    zero_head: bool = False

    @field_validator("gain")
    @classmethod
    def _positive_gain(cls, gain: float) -> float:
        if not gain > 0:
            raise ValueError("must be > 0")
        return gain


class InnerLoopSpec(_Frozen):
    """Adaptation to one task: ``steps`` gradient steps on the support set.

    ``granularity`` of the inner learning rate: one ``scalar``; one per parameter tensor
    (``per_layer``); one per parameter tensor and step (``per_layer_per_step``, MAML++); or one per
    parameter entry (``per_parameter``, Meta-SGD). ``learned`` rates are meta-learned with the
    initialization; fixed ones stay at ``lr``.
    """

    steps: int = 1
    lr: float = 0.4
    granularity: Literal["scalar", "per_layer", "per_layer_per_step", "per_parameter"] = "scalar"
    learned: bool = False

    @field_validator("steps")
    @classmethod
    def _steps_range(cls, steps: int) -> int:
        if not 0 <= steps <= 100:
            raise ValueError("must be between 0 and 100")
        return steps

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, lr: float) -> float:
        if not lr > 0:
            raise ValueError("must be > 0")
        return lr


class OuterLoopSpec(_Frozen):
    """Meta-training: the meta-algorithm and its optimizer.

    MAML++ options: the multi-step loss anneals towards the last step over the first
    ``msl_fraction`` of iterations, and the meta-gradient is first order for the first
    ``first_order_fraction`` of iterations (derivative-order annealing).

    ``precision: bfloat16`` meta-trains in mixed precision: the query pass (most of the
    arithmetic) runs its convolutions and matrix products in bfloat16 under ``torch.autocast``,
    while the inner loop, the meta-parameters, normalization statistics and losses stay float32.
    It pays off on devices with bfloat16 matrix units (recent GPUs; CPUs with AMX); held-out
    scoring stays float32.

    ``lr_schedule``: the meta learning rate stays ``constant``, is ``cosine``-annealed to zero
    over the budget really spent (Loshchilov and Hutter, 2017; MAML++ anneals so), or is halved
    every ``lr_halving_every`` meta-iterations (``step``: Snell et al. halve every 2000 episodes).

    Prototypical Networks options (Snell et al., 2017): ``train_ways``, ``train_shots`` and
    ``train_query_shots`` shape the training episodes (the paper trains Omniglot on 60-way
    episodes of 5 queries per class for 5- and 20-way tests; ``None`` keeps the task's; fewer
    queries make an episode cheaper), and ``distance`` is ``euclidean`` (squared, the paper's
    choice) or ``cosine`` (cosine similarity scaled by :data:`COSINE_SCALE`).
    """

    algorithm: Algorithm = "maml"
    meta_lr: float = 1e-3
    meta_batch_size: int = 8
    iterations: int = 1000
    optimizer: Literal["adam", "sgd"] = "adam"
    msl_fraction: float = 0.1
    first_order_fraction: float = 0.25
    precision: Precision = "float32"
    lr_schedule: Literal["constant", "cosine", "step"] = "constant"
    lr_halving_every: int = 2000
    train_ways: int | None = None
    train_shots: int | None = None
    train_query_shots: int | None = None
    distance: Literal["euclidean", "cosine"] = "euclidean"

    @field_validator("meta_lr")
    @classmethod
    def _positive_meta_lr(cls, meta_lr: float) -> float:
        if not meta_lr > 0:
            raise ValueError("must be > 0")
        return meta_lr

    @field_validator("meta_batch_size", "iterations", "lr_halving_every")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be >= 1")
        return value

    @field_validator("train_ways", "train_shots", "train_query_shots")
    @classmethod
    def _episode_shape(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError("must be >= 1")
        return value

    @field_validator("msl_fraction", "first_order_fraction")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0 <= value <= 1:
            raise ValueError("must be between 0 and 1")
        return value


_GRADIENT = tuple(a for a in ALGORITHMS if a != "protonet")
APPLIES: dict[str, dict[str, tuple[Any, ...]]] = {
    "architecture.kernel_size": {"architecture.family": ("conv",)},
    "architecture.pooling": {"architecture.family": ("conv",)},
    "architecture.head": {"architecture.family": ("conv", "cells")},
    "architecture.genotype": {"architecture.family": ("cells",)},
    "init.zero_head": {"outer.algorithm": _GRADIENT},
    "inner.steps": {"outer.algorithm": _GRADIENT},
    "inner.lr": {"outer.algorithm": _GRADIENT},
    "inner.learned": {"outer.algorithm": _GRADIENT},
    "inner.granularity": {"outer.algorithm": _GRADIENT, "inner.learned": (True,)},
    "outer.msl_fraction": {"outer.algorithm": ("mamlpp",)},
    "outer.first_order_fraction": {"outer.algorithm": ("mamlpp",)},
    "outer.train_ways": {"outer.algorithm": ("protonet",)},
    "outer.train_shots": {"outer.algorithm": ("protonet",)},
    "outer.train_query_shots": {"outer.algorithm": ("protonet",)},
    "outer.distance": {"outer.algorithm": ("protonet",)},
    "outer.lr_halving_every": {"outer.lr_schedule": ("step",)},
}
"""Where a spec field means something, written as a search space's ``when:``: every named
field has one of the values listed; fields not listed always do. Elsewhere the learner ignores
the field: kernel and pooling outside the conv family, the head outside feature maps, the
output layer and the inner loop of Prototypical Networks (which have neither), the granularity
of fixed inner rates (each equals ``inner.lr``), the options of MAML++ and of Prototypical
Networks under other algorithms, the halving period of other schedules."""


def applies(field: str, values: Mapping[str, Any]) -> bool:
    """Whether the dotted spec field ``field`` means something for the spec whose dotted fields
    are ``values`` (a field missing there counts as its default)."""
    return all(
        values.get(ref, _DEFAULTS[ref]) in allowed
        for ref, allowed in APPLIES.get(field, {}).items()
    )


class LearnerSpec(_Frozen):
    """A whole candidate learner: what the search samples, the evaluator scores and export saves."""

    architecture: ArchitectureSpec = ArchitectureSpec()
    init: InitSpec = InitSpec()
    inner: InnerLoopSpec = InnerLoopSpec()
    outer: OuterLoopSpec = OuterLoopSpec()

    @model_validator(mode="after")
    def _consistent(self) -> LearnerSpec:
        algorithm, inner = self.outer.algorithm, self.inner
        if algorithm in ("metasgd", "mamlpp") and not inner.learned:
            raise ValueError(f"{algorithm} meta-learns its inner learning rates: set inner.learned")
        if algorithm == "mamlpp" and inner.granularity != "per_layer_per_step":
            raise ValueError("mamlpp uses per_layer_per_step inner learning rates")
        if algorithm == "reptile" and inner.learned:
            raise ValueError("reptile cannot meta-learn inner learning rates: set learned false")
        if algorithm == "protonet" and inner.steps != 0:
            raise ValueError("protonet has no inner loop: set inner.steps to 0")
        if algorithm != "protonet" and inner.steps == 0:
            raise ValueError(f"{algorithm} adapts by gradient steps: set inner.steps >= 1")
        outer = self.outer
        if algorithm != "protonet" and (
            outer.train_ways is not None
            or outer.train_shots is not None
            or outer.train_query_shots is not None
            or outer.distance != "euclidean"
        ):
            raise ValueError(
                "outer.train_ways, train_shots, train_query_shots and distance are Prototypical "
                "Networks options; "
                f"{algorithm} trains on the task's own episodes"
            )
        if outer.train_ways == 1:
            raise ValueError("outer.train_ways must be >= 2")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearnerSpec:
        """Builds a spec from plain data, raising :class:`SpecError` that names each bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise SpecError(format_validation_error(error, "learner spec")) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data that :meth:`from_dict` turns back into an equal spec."""
        return self.model_dump(mode="json")


_DEFAULTS: dict[str, Any] = {
    f"{section}.{name}": value
    for section, fields in LearnerSpec().model_dump().items()
    for name, value in fields.items()
}


def format_validation_error(error: ValidationError, what: str, shown: int = 5) -> str:
    """One short part per problem, naming the field path and what is allowed; past ``shown``
    problems, only their number."""
    lines = []
    for problem in error.errors()[:shown]:
        path = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown field"
        lines.append(f"{path}: {message}")
    if error.error_count() > shown:
        lines.append(f"and {error.error_count() - shown} more")
    return f"invalid {what}: " + "; ".join(lines)
