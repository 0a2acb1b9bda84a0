"""The evaluator's speed before and after a change, in one run: ``evaluator_throughput.py`` of
an earlier revision and of the working tree, alternately, on the same machine.

The earlier revision is checked out into a temporary git worktree; each round runs that tree's
own benchmark script on its own package (``PYTHONPATH``), then this tree's, so both meet the
same machine load. Every measurement is the metasearch implementation of that tree (its
default path) against the plain per-task loop of the same tree, so the loop's speed tells
whether the machine changed between the two.

    python benchmarks/before_after.py --before 4256a84 --rounds 3

writes ``benchmarks/results/evaluator_throughput_before_after.csv`` (every round of both trees)
and prints the best tasks per second of each tree and their ratio.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KEY = ("implementation", "algorithm", "ways", "inner_steps", "meta_batch", "precision")


def measure(tree: Path, out: Path, args: argparse.Namespace) -> list[dict[str, str]]:
    """Rows of ``tree``'s throughput benchmark on one thread, written to ``out``."""
    command = [
        sys.executable,
        str(tree / "benchmarks" / "evaluator_throughput.py"),
        "--device", "cpu",
        "--threads", "1",
        "--implementations", "loop", "metasearch",
        "--algorithms", *args.algorithms,
        "--meta-batch", *map(str, args.meta_batch),
        "--inner-steps", *map(str, args.inner_steps),
        "--ways", *map(str, args.ways),
        "--csv", str(out),
    ]  # fmt: skip
    environment = os.environ | {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=tree, env=environment, check=True, stdout=subprocess.DEVNULL)
    with out.open(newline="") as file:
        return list(csv.DictReader(file))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="the earlier git revision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--algorithms", nargs="+", default=["maml", "fomaml"])
    parser.add_argument("--meta-batch", type=int, nargs="+", default=[32])
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--ways", type=int, nargs="+", default=[5])
    parser.add_argument(
        "--csv", type=Path, default=RESULTS / "evaluator_throughput_before_after.csv"
    )
    args = parser.parse_args()
    rows: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory() as scratch:
        before = Path(scratch) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), args.before],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            for round_ in range(1, args.rounds + 1):
                for name, tree in (("before", before), ("after", ROOT)):
                    out = Path(scratch) / f"{name}-{round_}.csv"
                    for row in measure(tree, out, args):
                        rows.append({"tree": name, "round": str(round_), **row})
                    print(f"round {round_}: {name} measured", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    best: dict[tuple[str, ...], dict[str, float]] = {}
    for row in rows:
        if row.get("status") == "ok":
            speeds = best.setdefault(tuple(row[k] for k in KEY), {})
            speeds[row["tree"]] = max(speeds.get(row["tree"], 0.0), float(row["tasks_per_s"]))
    for key, speeds in sorted(best.items()):
        if {"before", "after"} <= speeds.keys():
            ratio = speeds["after"] / speeds["before"]
            print(
                f"{' '.join(key)}: before {speeds['before']:.2f} tasks/s, after "
                f"{speeds['after']:.2f} tasks/s, after/before {ratio:.2f}"
            )
    print(f"written {args.csv}")


if __name__ == "__main__":
    main()
