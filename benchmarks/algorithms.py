"""Every registered meta-algorithm at one small configuration, on sinusoid regression and on
Omniglot 5-way 1-shot, meta-trained for the same number of iterations on one CPU thread and
scored on 600 meta-test tasks (of classes never seen in training, test classes upright).

- sinusoid: the MLP of Finn et al. (2017), two hidden layers of 40 units, 10 shots, one inner
  step at 0.01, meta-batch 25; query MSE;
- Omniglot: four conv blocks of 32 channels with batch normalization, one inner step at 0.4,
  meta-batch 8 (the CPU learning test's configuration); query accuracy.

A candidate that diverges gets a row saying so (``status``, ``reason``) instead of a score.

Each algorithm gets the same spec apart from what it requires (``inner.learned`` for Meta-SGD
and MAML++, no inner loop for Prototypical Networks); Prototypical Networks have no regression.

    python benchmarks/algorithms.py --data-root ../shared/data                  # about 20 min
    python benchmarks/algorithms.py --algorithms maml imaml learned_optimizer

writes ``benchmarks/results/algorithms.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path
from typing import Any

import torch

from metasearch import registry
from metasearch.evaluation import Budget, evaluate
from metasearch.spec import LearnerSpec
from metasearch.tasks import SinusoidSource, omniglot

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "task",
    "algorithm",
    "status",
    "reason",
    "iterations",
    "meta_train_seconds",
    "query_loss",
    "query_loss_ci95",
    "accuracy",
    "accuracy_ci95",
    "test_tasks",
)
LEARNED_RATES = {"metasgd", "mamlpp"}


def spec_for(algorithm: str, task: str, iterations: int) -> LearnerSpec:
    """The benchmark's configuration for ``algorithm`` on ``task``."""
    if task == "sinusoid":
        data: dict[str, Any] = {
            "architecture": {"family": "mlp", "widths": [40, 40], "normalization": "none"},
            "init": {"scheme": "xavier"},
            "inner": {"steps": 1, "lr": 0.01},
            "outer": {"meta_lr": 3e-3, "meta_batch_size": 25},
        }
    else:
        data = {
            "architecture": {"widths": [32, 32, 32, 32]},
            "init": {"zero_head": True},
            "inner": {"steps": 1, "lr": 0.4},
            "outer": {"meta_lr": 3e-3, "meta_batch_size": 8},
        }
    data["outer"] |= {"algorithm": algorithm, "iterations": iterations}
    if algorithm in LEARNED_RATES:
        data["inner"]["learned"] = True
    if algorithm == "protonet":
        data["inner"] = {"steps": 0}
        data["outer"]["meta_batch_size"] = 1
    return LearnerSpec.from_dict(data)


def run(algorithm: str, task: str, args: argparse.Namespace) -> dict[str, Any]:
    """Meta-trains ``algorithm`` on ``task`` and scores it; one row of the results."""
    if task == "sinusoid":
        source: Any = SinusoidSource(shots=10, query_points=10)
        iterations = args.sinusoid_iterations
    else:
        source = omniglot(args.data_root, ways=5, shots=1, query_shots=5)
        iterations = args.omniglot_iterations
    spec = spec_for(algorithm, task, iterations)
    started = time.perf_counter()
    result = evaluate(spec, source, Budget(eval_tasks=args.test_tasks, eval_split="test"))
    if result.status != "complete":
        print(f"{task:>8} {algorithm:>17}: {result.status}: {result.reason}", flush=True)
        return {"task": task, "algorithm": algorithm, "iterations": result.iterations,
                "status": result.status, "reason": result.reason}  # fmt: skip
    print(
        f"{task:>8} {algorithm:>17}: query loss {result.query_loss:.4f} "
        f"± {result.query_loss_ci95:.4f}"
        + (
            f", accuracy {result.accuracy:.2%} ± {result.accuracy_ci95:.2%}"
            if result.accuracy
            else ""
        )
        + f" ({result.iterations} iterations, {time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return {
        "task": task,
        "algorithm": algorithm,
        "status": result.status,
        "reason": None,
        "iterations": result.iterations,
        "meta_train_seconds": round(result.meta_train_seconds, 1),
        "query_loss": round(result.query_loss, 4),
        "query_loss_ci95": round(result.query_loss_ci95, 4),
        "accuracy": None if result.accuracy is None else round(result.accuracy, 4),
        "accuracy_ci95": None if result.accuracy_ci95 is None else round(result.accuracy_ci95, 4),
        "test_tasks": args.test_tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = [algorithm.name for algorithm in registry.registered()]
    parser.add_argument("--algorithms", nargs="+", choices=names, default=names)
    parser.add_argument(
        "--tasks", nargs="+", choices=["sinusoid", "omniglot"], default=["sinusoid", "omniglot"]
    )
    parser.add_argument("--sinusoid-iterations", type=int, default=1500)
    parser.add_argument("--omniglot-iterations", type=int, default=300)
    parser.add_argument("--test-tasks", type=int, default=600)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("METASEARCH_DATA", "data"))
    )
    parser.add_argument("--csv", type=Path, default=RESULTS / "algorithms.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [
        run(algorithm, task, args)
        for task in args.tasks
        for algorithm in args.algorithms
        if not (task == "sinusoid" and registry.lookup(algorithm).classification_only)
    ]
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"written {args.csv}")


if __name__ == "__main__":
    main()
