"""The meta-search (MetaNAS, Elsken et al. 2020): meta-learn the supernet's weights and its
architecture weights together, then derive a genotype.

Each meta-iteration the trial's meta-algorithm adapts the network weights to every task's
support set and updates them as usual. The architecture weights are meta-learned tensors that
the inner loop does not adapt, so the meta-gradient of the query loss after adaptation reaches
them as well: second order for MAML, first order for first-order MAML. Reptile's update gives
them nothing, so for Reptile they follow the first-order query-loss gradient after adaptation to
the support set. They stay frozen for the first ``warmup`` iterations, while the weights learn
enough for the comparison between operations to mean something.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.func import vmap

from metasearch.algorithms import MetaAlgorithm, get_algorithm
from metasearch.darts.config import DartsConfig
from metasearch.darts.genotype import derive_genotype, edge_inputs, edge_label
from metasearch.darts.supernet import ALPHAS, SupernetLearner, build_supernet_learner
from metasearch.engines import choose_engine
from metasearch.evaluation.allocator import retain_freed_memory
from metasearch.spec import Genotype, LearnerSpec
from metasearch.tasks.base import TaskBatch, TaskSource


@dataclass
class SearchResult:
    """The derived genotype, the final softmax weights by cell kind, their recorded history
    (JSON-safe, see :class:`History`), the search's wall time and the trained supernet."""

    genotype: Genotype
    weights: dict[str, Tensor]
    history: dict[str, Any]
    seconds: float
    learner: SupernetLearner


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


def search_architecture(
    spec: LearnerSpec, source: TaskSource, config: DartsConfig, seed: int = 0
) -> SearchResult:
    """Runs the search for ``spec``'s meta-algorithm, initialization, inner loop and outer loop
    on ``source``'s training tasks. Raises ``FloatingPointError`` where the loss diverges."""
    learner = build_supernet_learner(
        spec, source, config.channels, config.cells, config.nodes, config.operations, seed
    )
    algorithm = get_algorithm(spec.outer.algorithm)
    engine = choose_engine(learner)
    arch = list(learner.alphas().values())
    arch_ids = {id(t) for t in arch}
    meta = learner.meta_tensors()
    weights = [t for t in meta if id(t) not in arch_ids]
    optimizer_type = torch.optim.Adam if spec.outer.optimizer == "adam" else torch.optim.SGD
    weight_optimizer = optimizer_type(weights, lr=spec.outer.meta_lr)
    arch_optimizer = torch.optim.Adam(
        arch, lr=config.arch_lr, betas=(0.5, 0.999), weight_decay=config.arch_weight_decay
    )
    retain_freed_memory(source.device)
    generator = torch.Generator(device=source.device).manual_seed(seed)
    history = History(config)
    history.record(0, architecture_weights(learner))
    start = time.perf_counter()
    for iteration in range(1, config.iterations + 1):
        batch = source.sample("train", spec.outer.meta_batch_size, generator)
        searching = iteration > config.warmup
        if config.drop_prob > 0:
            learner.supernet.keep = learner.supernet.sample_keep(config.drop_prob, generator)
        try:
            step = engine.meta_gradients(
                algorithm, [learner], batch, (iteration - 1) / config.iterations
            )[0]
            grads = {id(t): g for t, g in zip(meta, step.grads, strict=True)}
            if searching and not algorithm.query_gradient:
                grads |= dict(zip(map(id, arch), _query_gradients(algorithm, learner, batch)))
        finally:
            learner.supernet.keep = None
        loss = step.task_losses.mean().item()
        if not math.isfinite(loss):
            raise FloatingPointError(f"architecture search diverged at iteration {iteration}")
        for tensor in weights:
            tensor.grad = grads[id(tensor)]
        weight_optimizer.step()
        if searching:
            for tensor in arch:
                tensor.grad = grads[id(tensor)]
            arch_optimizer.step()
        if iteration % config.history_every == 0 or iteration == config.iterations:
            history.record(iteration, architecture_weights(learner))
    seconds = time.perf_counter() - start
    history.data["seconds"] = round(seconds, 3)
    final = architecture_weights(learner)
    genotype = derive_genotype(
        final, config.operations, config.nodes, config.cells, config.edges_per_node
    )
    return SearchResult(genotype, final, history.data, seconds, learner)


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
