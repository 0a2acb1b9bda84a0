"""The meta-search (MetaNAS, Elsken et al. 2020): meta-learn the supernet's weights and its
architecture weights together, then derive a genotype.

Each meta-iteration the trial's meta-algorithm adapts the network weights to every task's
support set and updates them as usual. The architecture weights are meta-learned tensors that
the inner loop does not adapt, so the meta-gradient of the query loss after adaptation reaches
them as well: second order for MAML, first order for first-order MAML. Reptile's update gives
them nothing, so for Reptile they follow the first-order query-loss gradient after adaptation to
the support set. They stay frozen for the first ``warmup`` iterations, while the weights learn
enough for the comparison between operations to mean something.

The search is a :class:`~metasearch.evaluation.evaluator.MetaTraining` of the supernet, so time
limits, stop requests, checkpoints, divergence and out-of-memory handling are the evaluator's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from metasearch.algorithms import MetaAlgorithm, MetaGradients, get_algorithm
from metasearch.darts.config import DartsConfig
from metasearch.darts.genotype import derive_genotype, edge_inputs, edge_label
from metasearch.darts.supernet import ALPHAS, SupernetLearner, build_supernet_learner
from metasearch.evaluation.checkpoint import CheckpointStore, TrainingState
from metasearch.evaluation.evaluator import MetaTraining, Report
from metasearch.evaluation.progress import Observer
from metasearch.evaluation.result import Budget, Status
from metasearch.spec import Genotype, LearnerSpec
from metasearch.tasks.base import TaskBatch, TaskSource


@dataclass
class SearchResult:
    """How a search ended: ``status`` ``complete`` with the derived ``genotype``, or ``failed``
    (diverged, out of memory) or ``pruned`` (too slow for its budget) with a one-line
    ``reason`` and no genotype. ``weights`` are the final softmax weights by cell kind,
    ``history`` their recorded history (JSON-safe, see :class:`History`), ``seconds`` and
    ``iterations`` the meta-training done, ``learner`` the trained supernet."""

    status: Status
    genotype: Genotype | None
    weights: dict[str, Tensor]
    history: dict[str, Any]
    seconds: float
    iterations: int
    learner: SupernetLearner
    reason: str | None = None


class History:
    """The softmax of the architecture weights per edge over iterations, as plain data:
    ``operations``, ``edges`` (labels), ``iterations``, and per cell kind one
    ``[edges][operations]`` table per recorded iteration."""

    def __init__(self, config: DartsConfig) -> None:
        self.data: dict[str, Any] = {
            "operations": list(config.operations),
            "edges": [edge_label(k, j) for k, j in edge_inputs(config.nodes)],
            "iterations": [],
            "normal": [],
            "reduce": [],
        }

    def record(self, iteration: int, weights: dict[str, Tensor]) -> None:
        self.data["iterations"].append(iteration)
        for kind, table in weights.items():
            rows = table.detach().cpu().tolist()
            self.data[kind].append([[round(w, 5) for w in row] for row in rows])


def architecture_weights(learner: SupernetLearner) -> dict[str, Tensor]:
    """The softmax over operations of each edge's architecture weights, by cell kind."""
    return {kind: alphas.detach().softmax(-1) for kind, alphas in learner.alphas().items()}


class ArchitectureSearch(MetaTraining):
    """Meta-training of a supernet: the network weights follow the spec's outer optimizer and
    meta learning-rate schedule, the architecture weights their own Adam (betas 0.5 and 0.999,
    as in DARTS, Liu et al. 2019) once ``config.warmup`` iterations are done. Each iteration
    draws a drop-path mask right after its meta-batch, from the same generator."""

    learner: SupernetLearner

    def __init__(
        self, learner: SupernetLearner, source: TaskSource, config: DartsConfig, seed: int
    ) -> None:
        budget = Budget(
            iterations=config.iterations,
            time_limit=config.time_limit,
            min_iterations=config.warmup + 1,
            seed=seed,
        )
        super().__init__(learner, source, budget, get_algorithm(learner.spec.outer.algorithm), None)
        self.config = config
        self.arch = list(learner.alphas().values())
        arch = {id(t) for t in self.arch}
        self.weights = [t for t in self.meta_tensors if id(t) not in arch]
        self.optimizer = type(self.optimizer)(self.weights, lr=learner.spec.outer.meta_lr)
        self.arch_optimizer = torch.optim.Adam(
            self.arch, lr=config.arch_lr, betas=(0.5, 0.999), weight_decay=config.arch_weight_decay
        )
        self.keep: dict[str, Tensor] | None = None
        self.history = History(config)
        self.history.record(0, architecture_weights(learner))

    def searching(self) -> bool:
        """Whether the architecture weights learn in the next iteration: the warm-up is over."""
        return self.done >= self.config.warmup

    def minimum(self) -> str:
        return f"warmup + 1 = {self.config.warmup + 1} (one search step past the warm-up)"

    def sample(self, generator: torch.Generator) -> TaskBatch:
        batch = super().sample(generator)
        if self.config.drop_prob > 0:
            self.keep = self.learner.supernet.sample_keep(self.config.drop_prob, generator)
        return batch

    def meta_gradients(self, batch: TaskBatch) -> MetaGradients:
        """The meta-gradients under the iteration's drop-path mask; for algorithms without a
        query-loss gradient, the architecture weights' first-order one."""
        self.learner.supernet.keep = self.keep
        try:
            step = super().meta_gradients(batch)
            if self.searching() and not self.algorithm.query_gradient:
                grads = dict(zip(map(id, self.meta_tensors), step.grads, strict=True))
                found = _query_gradients(self.algorithm, self.train_learner, batch)
                grads |= dict(zip(map(id, self.arch), found, strict=True))
                step = step._replace(grads=[grads[id(t)] for t in self.meta_tensors])
        finally:
            self.learner.supernet.keep = self.keep = None
        return step

    def outer_step(self, step: MetaGradients) -> None:
        grads = dict(zip(map(id, self.meta_tensors), step.grads, strict=True))
        for tensor in self.weights:
            tensor.grad = grads[id(tensor)]
        self.optimizer.step()
        if self.searching():
            for tensor in self.arch:
                tensor.grad = grads[id(tensor)]
            self.arch_optimizer.step()

    def apply(
        self, batch: TaskBatch, step: MetaGradients, report: Report | None, elapsed: float
    ) -> bool:
        ended = super().apply(batch, step, report, elapsed)
        if self.done % self.config.history_every == 0:
            self.history.record(self.done, architecture_weights(self.learner))
        return ended

    def finish(self) -> None:
        super().finish()
        if self.history.data["iterations"][-1] != self.done:
            self.history.record(self.done, architecture_weights(self.learner))

    def save_state(self, generator: torch.Generator) -> TrainingState:
        state = super().save_state(generator)
        optimizers = {"architecture": self.arch_optimizer.state_dict()}
        return replace(state, optimizers=optimizers, extra={"history": self.history.data})

    def load_state(self, state: TrainingState, generator: torch.Generator) -> None:
        super().load_state(state, generator)
        self.arch_optimizer.load_state_dict(state.optimizers["architecture"])
        self.history.data = state.extra["history"]

    def search_result(self) -> SearchResult:
        """The outcome; a genotype only where the search completed."""
        status: Status = "failed" if self.failure else "pruned" if self.pruned else "complete"
        final = architecture_weights(self.learner)
        self.history.data["seconds"] = round(self.seconds, 3)
        genotype = None
        if status == "complete":
            config = self.config
            genotype = derive_genotype(
                final, config.operations, config.nodes, config.cells, config.edges_per_node
            )
        return SearchResult(
            status,
            genotype,
            final,
            self.history.data,
            self.seconds,
            self.done,
            self.learner,
            self.failure or self.reason,
        )


def search_architecture(
    spec: LearnerSpec,
    source: TaskSource,
    config: DartsConfig,
    seed: int = 0,
    *,
    checkpoints: CheckpointStore | None = None,
    stop: Callable[[], bool] | None = None,
    observe: Observer | None = None,
) -> SearchResult:
    """Runs the search for ``spec``'s meta-algorithm, initialization, inner loop and outer loop
    on ``source``'s training tasks.

    Never raises for a search that diverges or runs out of memory: the result then has status
    ``failed`` and a reason; one whose time limit ends it within the warm-up is ``pruned``.
    ``checkpoints``, ``stop`` and ``observe`` work as in
    :func:`~metasearch.evaluation.evaluate`: a search resumes from the store's last checkpoint
    (history included), and raises :class:`~metasearch.evaluation.TrainingInterrupted` after
    a checkpoint where ``stop()`` turns true.
    """
    learner = build_supernet_learner(
        spec, source, config.channels, config.cells, config.nodes, config.operations, seed
    )
    search = ArchitectureSearch(learner, source, config, seed)
    search.run(None, checkpoints, stop, observe)
    return search.search_result()


def _query_gradients(
    algorithm: MetaAlgorithm, learner: SupernetLearner, batch: TaskBatch
) -> tuple[Tensor, ...]:
    """First-order gradient of the mean query loss after adaptation to each support set, with
    respect to the architecture weights."""
    params = {n: p if n.startswith(ALPHAS) else p.detach() for n, p in learner.params.items()}
    meta = {n: v.detach() for n, v in learner.meta_state.items()}

    def one_task(sx: Tensor, sy: Tensor, qx: Tensor, qy: Tensor) -> Tensor:
        state = algorithm.adapt(learner, params, meta, sx, sy, True)
        return learner.loss(algorithm.predict(learner, params, state, qx), qy)

    losses = vmap(one_task)(*batch)
    return torch.autograd.grad(losses.mean(), list(learner.alphas().values()), allow_unused=True)
