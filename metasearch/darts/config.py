"""The ``darts:`` section of a study file: how the differentiable architecture search runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from metasearch.spec import PRIMITIVES, CellKind, Operation


class DartsConfig(BaseModel):
    """Settings of one differentiable architecture search.

    The supernet has ``channels`` stem channels, one cell per entry of ``cells`` (a reduction
    cell halves the feature map and doubles the channels) and ``nodes`` nodes per cell; each
    edge mixes ``operations``. Network weights meta-train for ``iterations`` meta-iterations, or
    until ``time_limit`` seconds of meta-training (an iteration that would overrun it by the
    measured cost of recent ones is not started), whichever comes first, with the trial's
    meta-algorithm; the architecture weights start learning after ``warmup`` of them, with Adam
    at ``arch_lr``. A search whose time limit ends it before the warm-up is over is pruned as
    too slow for its budget, not turned into a genotype. Each operation is dropped with
    probability ``drop_prob`` per meta-iteration. The derived cells keep ``edges_per_node``
    edges per node. The architecture weights' softmax is recorded every ``history_every``
    iterations.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    iterations: int = Field(200, ge=1)
    time_limit: float | None = Field(None, gt=0)
    warmup: int = Field(50, ge=0)
    arch_lr: float = Field(3e-3, gt=0)
    arch_weight_decay: float = Field(1e-3, ge=0)
    drop_prob: float = Field(0.2, ge=0, lt=1)
    channels: int = Field(16, ge=2, multiple_of=2)
    cells: tuple[CellKind, ...] = Field(("reduce", "normal", "reduce"), min_length=1)
    nodes: int = Field(3, ge=1, le=6)
    edges_per_node: int = Field(2, ge=1)
    operations: tuple[Operation, ...] = PRIMITIVES  # type: ignore[assignment]
    history_every: int = Field(10, ge=1)

    @field_validator("operations")
    @classmethod
    def _operations(cls, operations: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(operations)) < len(operations):
            raise ValueError("an operation is listed twice")
        if not set(operations) - {"none"}:
            raise ValueError("needs an operation other than none")
        return operations

    @model_validator(mode="after")
    def _fits(self) -> DartsConfig:
        if self.warmup >= self.iterations:
            raise ValueError("warmup must be below iterations, or the architecture never learns")
        if self.edges_per_node > 2:
            raise ValueError("edges_per_node must be 1 or 2: the first node has two inputs")
        return self
