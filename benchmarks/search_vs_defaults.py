"""Does the search beat the papers' configurations at equal compute? Four arms, each given the
same wall-clock budget on one CPU thread, each run through the command line as a user would,
each scored by ``metasearch evaluate`` on meta-test tasks of alphabets never seen in training:

- ``maml``: the MAML configuration of Finn et al. (2017), ``metasearch train --seed``;
- ``protonet``: the Prototypical Networks configuration of Snell et al. (2017), likewise;
- ``search``: ``metasearch search`` on the seeded study (the seeds above among its trials), then
  ``metasearch train --trial best`` with what is left of the budget;
- ``darts``: ``metasearch search`` on the differentiable-search study (one search, its derived
  cells meta-trained as the trial), then ``train --trial best`` with what is left.

An arm's budget counts everything that chooses and trains its learner: the search with its
validation scoring, and the retraining's seconds of meta-training. The final meta-test
evaluation is the measurement and is not counted. Arms run side by side, ``--parallel`` at a
time, each on one thread (``OMP_NUM_THREADS=1``).

    python benchmarks/search_vs_defaults.py --budget 1800 --data-root ../shared/data

writes ``benchmarks/results/search_vs_defaults_<study>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ARMS = {
    "maml": ("seed", "maml_finn2017"),
    "protonet": ("seed", "protonet_snell2017"),
    "search": ("search", None),
    "darts": ("darts", None),
}
SCORE = re.compile(r"accuracy ([\d.]+)% ± ([\d.]+)%")
LOSS = re.compile(r"query loss ([\d.e+-]+) ± ([\d.e+-]+)")


def metasearch(*args: str | Path, log: Path) -> float:
    """Runs one metasearch command on one thread, appending its output to ``log``; returns its
    wall-clock seconds. Raises where it fails."""
    environment = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "metasearch", *map(str, args)]
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {' '.join(command[2:])}\n")
        out.flush()
        subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=environment, check=True)
    return time.perf_counter() - started


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, object]:
    """Trains ``arm`` within the budget, exports it and scores it; one row of the results, kept
    in the arm's folder so that a rerun skips the arms already done."""
    folder = args.out / arm
    done = folder / "row.json"
    if done.is_file():
        return json.loads(done.read_text())
    row = _train_and_score(arm, folder, args)
    done.write_text(json.dumps(row))
    return row


def _train_and_score(arm: str, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    kind, seed = ARMS[arm]
    folder.mkdir(parents=True, exist_ok=True)
    log, learner = folder / "log.txt", folder / "learner"
    data = ("--data-root", args.data_root)
    common = (*data, "--device", "cpu")
    spent_searching = 0.0
    if kind == "seed":
        study = args.study
        train = ("--seed", seed)
    else:
        study = args.study if kind == "search" else args.darts_study
        storage = f"sqlite:///{folder / 'study.db'}"
        spent_searching = metasearch("search", study, "--storage", storage, *common, log=log)
        train = ("--trial", "best", "--storage", storage)
    left = args.budget - spent_searching
    if left <= 0:
        raise RuntimeError(f"{arm}: the search took {spent_searching:.0f} s of {args.budget} s")
    metasearch(
        "train", study, *train, "--seconds", f"{left:.0f}", "--out", learner, *common, log=log
    )
    evaluation = folder / "evaluate.txt"
    metasearch(
        "evaluate", learner, "--episodes", args.episodes, *common, *args.protocol, log=evaluation
    )
    text = " ".join(evaluation.read_text().split())
    accuracy, loss = SCORE.search(text), LOSS.search(text)
    metadata = json.loads((learner / "learner.json").read_text())
    training = metadata["provenance"]["training"]
    spec = metadata["spec"]
    return {
        "arm": arm,
        "study": Path(study).stem,
        "budget_seconds": args.budget,
        "search_seconds": round(spent_searching, 1),
        "retrain_seconds": round(training["meta_train_seconds"], 1),
        "iterations": training["iterations"],
        "accuracy": float(accuracy.group(1)) / 100 if accuracy else None,
        "accuracy_ci95": float(accuracy.group(2)) / 100 if accuracy else None,
        "query_loss": float(loss.group(1)) if loss else None,
        "query_loss_ci95": float(loss.group(2)) if loss else None,
        "episodes": args.episodes,
        "algorithm": spec["outer"]["algorithm"],
        "configuration": json.dumps(spec, separators=(",", ":")),
    }


def write_rows(target: Path, rows: list[dict[str, object]]) -> None:
    """Writes ``rows`` to ``target``, keeping the rows of the arms not run this time."""
    kept: list[dict[str, object]] = []
    if target.is_file():
        with target.open(newline="") as existing:
            rerun = {row["arm"] for row in rows}
            kept = [row for row in csv.DictReader(existing) if row["arm"] not in rerun]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(sorted([*kept, *rows], key=lambda row: list(ARMS).index(str(row["arm"]))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, default=ROOT / "studies/omniglot_20way1shot_cpu.yaml")
    parser.add_argument(
        "--darts-study", type=Path, default=ROOT / "studies/omniglot_20way1shot_darts_cpu.yaml"
    )
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds per arm")
    parser.add_argument("--parallel", type=int, default=2, help="arms side by side")
    parser.add_argument("--episodes", default="600", help="meta-test tasks per arm")
    parser.add_argument(
        "--protocol", nargs="*", default=[], help="extra evaluate options, e.g. --protocol vinyals"
    )
    parser.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("METASEARCH_DATA", "data"))
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs/search_vs_defaults")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    args.out = args.out / args.study.stem
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda arm: run_arm(arm, args), args.arms))
    target = args.csv or ROOT / f"benchmarks/results/search_vs_defaults_{args.study.stem}.csv"
    write_rows(target, rows)
    for row in rows:
        print(
            f"{row['arm']:>9}: accuracy {row['accuracy']:.2%} ± {row['accuracy_ci95']:.2%} "
            f"({row['algorithm']}, {row['iterations']} iterations retrained, "
            f"{row['search_seconds']} s searching)"
        )
    print(f"written {target}")


if __name__ == "__main__":
    main()
