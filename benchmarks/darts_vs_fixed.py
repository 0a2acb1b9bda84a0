"""Differentiable architecture search against the fixed four-block conv learner, at equal cost.

On Omniglot 5-way 1-shot, the ``darts`` arm searches a cell architecture with the meta-search
(:mod:`metasearch.darts`), then meta-trains the derived learner from scratch with the evaluator.
The ``fixed`` arm meta-trains the four-block conv learner (64 channels, batch normalization, max
pooling) with the same meta-algorithm and hyperparameters for the same wall time as the whole
``darts`` arm, search included. Both are scored by the same evaluator on the same meta-test
tasks (adaptation on each support set, accuracy on its query set, 95% confidence half-widths).

Usage (reads Omniglot from ``--data-root`` or ``$METASEARCH_DATA``)::

    python benchmarks/darts_vs_fixed.py --threads 1 --search-iterations 100 --warmup 30 \
        --train-iterations 600 --test-tasks 200 --plot docs/darts    # the README's run, 12 min
    python benchmarks/darts_vs_fixed.py --search-iterations 4 --warmup 2 --train-iterations 4
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from metasearch.darts import DartsConfig, genotype_spec, search_architecture
from metasearch.darts.plot import draw_history
from metasearch.evaluation import Budget, EvaluationResult, evaluate
from metasearch.spec import LearnerSpec
from metasearch.tasks import omniglot

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = (
    "arm",
    "architecture",
    "n_parameters",
    "search_iterations",
    "search_seconds",
    "train_iterations",
    "train_seconds",
    "total_seconds",
    "test_accuracy",
    "test_accuracy_ci95",
    "test_query_loss",
    "test_query_loss_ci95",
    "test_tasks",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--algorithm", default="fomaml", choices=["maml", "fomaml", "reptile"])
    parser.add_argument("--inner-steps", type=int, default=1)
    parser.add_argument("--search-iterations", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--train-iterations", type=int, default=60)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--test-tasks", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", type=Path, default=RESULTS / "darts_vs_fixed.csv")
    parser.add_argument("--plot", type=Path, default=None, help="folder for weight plots")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    source = omniglot(args.data_root, ways=5, shots=1, query_shots=5)
    hyper = {
        "init": {"scheme": "kaiming"},
        "inner": {"steps": args.inner_steps, "lr": 0.4},
        "outer": {"algorithm": args.algorithm, "meta_lr": 1e-3, "meta_batch_size": 4},
    }
    test = {"eval_split": "test", "eval_tasks": args.test_tasks, "seed": args.seed}
    darts = DartsConfig(
        iterations=args.search_iterations,
        warmup=args.warmup,
        channels=args.channels,
        nodes=args.nodes,
        cells=("reduce", "normal", "reduce"),
    )
    start = time.perf_counter()
    searched = search_architecture(
        LearnerSpec.from_dict({**hyper, "architecture": {"head": "gap"}}), source, darts, args.seed
    )
    if searched.genotype is None:
        raise SystemExit(f"the search {searched.status}: {searched.reason}")
    derived = genotype_spec(
        LearnerSpec.from_dict({**hyper, "architecture": {"head": "gap"}}),
        searched.genotype,
        darts.channels,
    )
    print(f"derived genotype ({searched.seconds:.0f} s of search): {searched.genotype}")
    if args.plot is not None:
        args.plot.mkdir(parents=True, exist_ok=True)
        for kind in ("normal", "reduce"):
            figure = draw_history(searched.history, kind, f"Omniglot 5-way 1-shot: {kind} cell")
            figure.savefig(args.plot / f"architecture-weights-{kind}.png", dpi=100)
    trained = evaluate(derived, source, Budget(iterations=args.train_iterations, **test))
    total = time.perf_counter() - start
    print(f"darts: {_line(trained)} in {total:.0f} s")
    fixed_spec = LearnerSpec.from_dict({**hyper, "architecture": {"widths": [64] * 4}})
    fixed = evaluate(fixed_spec, source, Budget(iterations=100_000, time_limit=total, **test))
    print(f"fixed: {_line(fixed)}")

    rows = [
        _row(
            "darts",
            str(searched.genotype),
            trained,
            darts.iterations,
            searched.seconds,
            total,
            args.test_tasks,
        ),
        _row("fixed", "conv 4x64", fixed, 0, 0.0, fixed.meta_train_seconds, args.test_tasks),
    ]
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.csv}")


def _line(result: EvaluationResult) -> str:
    if result.status == "failed":
        return f"failed ({result.reason})"
    return (
        f"test accuracy {result.accuracy:.2%} ± {result.accuracy_ci95:.2%} after "
        f"{result.iterations} iterations"
    )


def _row(
    arm: str,
    architecture: str,
    result: EvaluationResult,
    search_iterations: int,
    search_seconds: float,
    total_seconds: float,
    test_tasks: int,
) -> dict[str, object]:
    return {
        "arm": arm,
        "architecture": architecture,
        "n_parameters": result.n_parameters,
        "search_iterations": search_iterations,
        "search_seconds": round(search_seconds, 1),
        "train_iterations": result.iterations,
        "train_seconds": round(result.meta_train_seconds, 1),
        "total_seconds": round(total_seconds, 1),
        "test_accuracy": result.accuracy,
        "test_accuracy_ci95": result.accuracy_ci95,
        "test_query_loss": result.query_loss,
        "test_query_loss_ci95": result.query_loss_ci95,
        "test_tasks": test_tasks,
    }


if __name__ == "__main__":
    main()
