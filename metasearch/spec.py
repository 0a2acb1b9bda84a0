"""The learner spec: one serializable description of a candidate few-shot learner.

A spec fixes the architecture, the initialization, the inner loop and the meta-algorithm with
its outer loop. It says nothing about the tasks (ways, shots): those belong to the task source.
What depends on the algorithm (its own options, the fields it reads, what it requires of the
rest of the spec) is asked of the algorithm's registration (:mod:`metasearch.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from metasearch import registry
from metasearch.errors import SpecError

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
LrSchedule = Literal["constant", "cosine", "step"]
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

    ``options`` are the algorithm's own (:attr:`metasearch.registry.AlgorithmRules.options`,
    e.g. iMAML's regularization strength), validated by its options model; those not given
    take the model's defaults.

    Prototypical Networks options (Snell et al., 2017): ``train_ways``, ``train_shots`` and
    ``train_query_shots`` shape the training episodes (the paper trains Omniglot on 60-way
    episodes of 5 queries per class for 5- and 20-way tests; ``None`` keeps the task's; fewer
    queries make an episode cheaper), and ``distance`` is ``euclidean`` (squared, the paper's
    choice) or ``cosine`` (cosine similarity scaled by :data:`COSINE_SCALE`).
    """

    algorithm: str = "maml"
    meta_lr: float = 1e-3
    meta_batch_size: int = 8
    iterations: int = 1000
    optimizer: Literal["adam", "sgd"] = "adam"
    msl_fraction: float = 0.1
    first_order_fraction: float = 0.25
    precision: Precision = "float32"
    lr_schedule: LrSchedule = "constant"
    lr_halving_every: int = 2000
    train_ways: int | None = None
    train_shots: int | None = None
    train_query_shots: int | None = None
    distance: Literal["euclidean", "cosine"] = "euclidean"
    options: dict[str, Any] = {}

    @field_validator("algorithm")
    @classmethod
    def _registered(cls, algorithm: str) -> str:
        if algorithm not in registry.names():
            choices = ", ".join(repr(name) for name in registry.names())
            raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {choices}")
        return algorithm

    @field_validator("options")
    @classmethod
    def _algorithm_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        algorithm = info.data.get("algorithm")
        if algorithm is None:  # refused above
            return options
        model = registry.lookup(algorithm).options
        try:
            model.model_validate(options)
        except ValidationError as error:
            raise ValueError(format_validation_error(error, f"{algorithm} options")) from None
        return options

    @model_serializer(mode="wrap")
    def _omit_no_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Leaves ``options`` out where the algorithm has none, so that specs of algorithms
        without options serialize (and resume) as before."""
        data = handler(self)
        if not self.options:
            data.pop("options", None)
        return data

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


APPLIES: dict[str, dict[str, tuple[Any, ...]]] = {
    "architecture.kernel_size": {"architecture.family": ("conv",)},
    "architecture.pooling": {"architecture.family": ("conv",)},
    "architecture.head": {"architecture.family": ("conv", "cells")},
    "architecture.genotype": {"architecture.family": ("cells",)},
    "inner.granularity": {"inner.learned": (True,)},
    "outer.lr_halving_every": {"outer.lr_schedule": ("step",)},
}
"""Where a spec field means something, besides what the algorithm reads, written as a search
space's ``when:``: every named field has one of the values listed; fields not listed always do.
Elsewhere the learner ignores the field: kernel and pooling outside the conv family, the head
outside feature maps, the granularity of fixed inner rates (each equals ``inner.lr``), the
halving period of other schedules. A field that some algorithm declares in its
:attr:`~metasearch.registry.AlgorithmRules.uses` (the inner loop, MAML++'s and Prototypical
Networks' options, ``outer.options.*``) applies only to the algorithms declaring it."""


def applies(field: str, values: Mapping[str, Any]) -> bool:
    """Whether the dotted spec field ``field`` means something for the spec whose dotted fields
    are ``values`` (a field missing there counts as its default)."""
    if field in algorithm_fields():
        algorithm = values.get("outer.algorithm", _DEFAULTS["outer.algorithm"])
        if algorithm not in registry.names() or field not in registry.lookup(algorithm).uses:
            return False
    return all(
        values.get(ref, _DEFAULTS[ref]) in allowed
        for ref, allowed in APPLIES.get(field, {}).items()
    )


def algorithm_fields() -> frozenset[str]:
    """The spec fields whose meaning depends on the algorithm: those some algorithm uses."""
    return frozenset().union(*(algorithm.uses for algorithm in registry.registered()))


class LearnerSpec(_Frozen):
    """A whole candidate learner: what the search samples, the evaluator scores and export saves."""

    architecture: ArchitectureSpec = ArchitectureSpec()
    init: InitSpec = InitSpec()
    inner: InnerLoopSpec = InnerLoopSpec()
    outer: OuterLoopSpec = OuterLoopSpec()

    @model_validator(mode="after")
    def _consistent(self) -> LearnerSpec:
        registry.lookup(self.outer.algorithm).check(self)
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


_DEFAULTS: dict[str, Any] = {  # from the sections' defaults: no algorithm is looked up
    f"{section}.{name}": value
    for section, info in LearnerSpec.model_fields.items()
    for name, value in info.default.model_dump().items()
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
