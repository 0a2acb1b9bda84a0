"""Does the search beat the papers' configurations at equal compute? Five arms, each given the
same wall-clock budget on one CPU thread, each run through the command line as a user would,
each scored by ``metasearch evaluate`` on meta-test tasks of alphabets never seen in training:

- ``maml``: the MAML configuration of Finn et al. (2017), ``metasearch train --seed`` with its
  paper's constant rate (``--lr-schedule constant``: the study's space anneals every candidate);
- ``protonet``: the Prototypical Networks configuration of Snell et al. (2017), likewise, its
  rate halved every 2,000 iterations (``--lr-schedule step``);
- ``protonet_cosine``: the same configuration as the study seeds it, its rate cosine-annealed
  over the budget as every candidate of the search is: how much of the search arm's lead is
  that schedule;
- ``search``: ``metasearch search`` on the seeded study (the seeds above among its trials), then
  ``metasearch train --trial best`` with what is left of the budget (its cosine schedule now
  following the retraining's budget);
- ``darts``: ``metasearch search`` on the differentiable-search study (one search, its derived
  cells meta-trained as the trial), then ``train --trial best`` with what is left.

An arm's budget counts everything that chooses and trains its learner: the search with its
validation scoring, and the retraining's seconds of meta-training. The final meta-test
evaluation is the measurement and is not counted. Arms run side by side, ``--parallel`` at a
time, each on one thread (``OMP_NUM_THREADS=1``). With ``--seeds``, every arm runs once per
random seed (the search's sampler and every training run): the spread between training runs,
which no one run's confidence interval holds.

    python benchmarks/search_vs_defaults.py --budget 1800 --data-root ../shared/data

writes ``benchmarks/results/search_vs_defaults_<study>.csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
ARMS = {  # how the arm chooses its learner, the seed it retrains, the retraining's schedule
    "maml": ("seed", "maml_finn2017", "constant"),
    "protonet": ("seed", "protonet_snell2017", "step"),
    "protonet_cosine": ("seed", "protonet_snell2017", None),
    "search": ("search", None, None),
    "darts": ("darts", None, None),
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


def run_arm(arm: str, seed: int, args: argparse.Namespace) -> dict[str, object]:
    """Trains ``arm`` with random seed ``seed`` within the budget, exports it and scores it; one
    row of the results, kept in the arm's folder so that a rerun skips the arms already done (and
    only scores again a learner scored on another number of tasks)."""
    base = args.darts_study if ARMS[arm][0] == "darts" else args.study
    folder = args.out / (arm if seed == study_seed(base) else f"{arm}_seed{seed}")
    done = folder / "row.json"
    if done.is_file():
        row = {"seed": study_seed(base)} | json.loads(done.read_text())
        if row["episodes"] == args.episodes:
            return row
    else:
        folder.mkdir(parents=True, exist_ok=True)
        row = _train(arm, seeded_study(base, seed, folder), folder, args)
    row |= _score(folder, args)
    done.write_text(json.dumps(row))
    return row


def study_seed(study: Path) -> int:
    """The random seed that ``study`` names."""
    return int(yaml.safe_load(study.read_text()).get("seed", 0))


def seeded_study(study: Path, seed: int, folder: Path) -> Path:
    """``study`` itself where it names ``seed``, else a copy in ``folder`` that does (its search
    space read from where the original's is)."""
    if seed == study_seed(study):
        return study
    content = yaml.safe_load(study.read_text())
    if isinstance(content.get("space"), str):
        content["space"] = str((study.parent / content["space"]).resolve())
    content["seed"] = seed
    copy = folder / study.name
    copy.write_text(yaml.safe_dump(content, sort_keys=False))
    return copy


def _train(arm: str, study: Path, folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """Chooses and trains ``arm``'s learner within the budget; the row's training half."""
    kind, seed, schedule = ARMS[arm]
    log, learner = folder / "log.txt", folder / "learner"
    common = ("--data-root", args.data_root, "--device", "cpu")
    spent_searching = 0.0
    if kind == "seed":
        train = ("--seed", seed)
    else:
        storage = f"sqlite:///{folder / 'study.db'}"
        spent_searching = metasearch("search", study, "--storage", storage, *common, log=log)
        train = ("--trial", "best", "--storage", storage)
    left = args.budget - spent_searching
    if left <= 0:
        raise RuntimeError(f"{arm}: the search took {spent_searching:.0f} s of {args.budget} s")
    if schedule is not None:
        train += ("--lr-schedule", schedule)
    metasearch(
        "train", study, *train, "--seconds", f"{left:.0f}", "--out", learner, *common, log=log
    )
    metadata = json.loads((learner / "learner.json").read_text())
    training = metadata["provenance"]["training"]
    spec = metadata["spec"]
    return {
        "arm": arm,
        "seed": study_seed(study),
        "study": study.stem,
        "budget_seconds": args.budget,
        "search_seconds": round(spent_searching, 1),
        "retrain_seconds": round(training["meta_train_seconds"], 1),
        "iterations": training["iterations"],
        "algorithm": spec["outer"]["algorithm"],
        "configuration": json.dumps(spec, separators=(",", ":")),
    }


def _score(folder: Path, args: argparse.Namespace) -> dict[str, object]:
    """Scores the learner in ``folder`` with ``metasearch evaluate``; the row's scoring half."""
    evaluation = folder / f"evaluate_{args.episodes}.txt"
    evaluation.unlink(missing_ok=True)
    metasearch(
        "evaluate", folder / "learner", "--episodes", args.episodes,
        "--data-root", args.data_root, "--device", "cpu", "--protocol", args.protocol,
        log=evaluation,
    )  # fmt: skip
    text = " ".join(evaluation.read_text().split())
    accuracy, loss = SCORE.search(text), LOSS.search(text)
    return {
        "accuracy": float(accuracy.group(1)) / 100 if accuracy else None,
        "accuracy_ci95": float(accuracy.group(2)) / 100 if accuracy else None,
        "query_loss": float(loss.group(1)) if loss else None,
        "query_loss_ci95": float(loss.group(2)) if loss else None,
        "episodes": args.episodes,
    }


def write_rows(target: Path, rows: list[dict[str, object]]) -> None:
    """Writes ``rows`` to ``target``, keeping the rows of the arms and seeds not run this time
    (a row from before seeds were recorded is the study file's seed, 0)."""
    kept: list[dict[str, object]] = []
    if target.is_file():
        with target.open(newline="") as existing:
            rerun = {(row["arm"], str(row["seed"])) for row in rows}
            old = [{"seed": "0"} | row for row in csv.DictReader(existing)]
            kept = [row for row in old if (row["arm"], str(row["seed"])) not in rerun]
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(
            sorted(
                [*kept, *rows],
                key=lambda row: (list(ARMS).index(str(row["arm"])), int(str(row["seed"]))),
            )
        )


def summarise(rows: list[dict[str, object]]) -> None:
    """Prints each row, then each arm's mean accuracy over its seeds with the 95% interval of
    that mean (Student's t over training runs, where an arm ran more than once)."""
    for row in rows:
        print(
            f"{row['arm']:>9} seed {row['seed']}: accuracy {row['accuracy']:.2%} ± "
            f"{row['accuracy_ci95']:.2%} ({row['algorithm']}, {row['iterations']} iterations "
            f"retrained, {row['search_seconds']} s searching)"
        )
    for arm in dict.fromkeys(str(row["arm"]) for row in rows):
        scores = [float(str(row["accuracy"])) for row in rows if row["arm"] == arm]
        if len(scores) > 1:
            half = stats.t.ppf(0.975, len(scores) - 1) * statistics.stdev(scores)
            print(
                f"{arm:>9}: mean {statistics.mean(scores):.2%} ± {half / len(scores) ** 0.5:.2%} "
                f"over {len(scores)} training runs (spread {statistics.stdev(scores):.2%})"
            )


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
        "--seeds", nargs="+", type=int, default=None, help="random seeds (default: the study's)"
    )
    parser.add_argument(
        "--protocol", default="unrotated", help="evaluate's protocol (vinyals: as papers report)"
    )
    parser.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("METASEARCH_DATA", "data"))
    )
    parser.add_argument("--out", type=Path, default=ROOT / "runs/search_vs_defaults")
    parser.add_argument("--csv", type=Path, default=None)
    args = parser.parse_args()
    args.out = args.out / args.study.stem
    runs = [(arm, seed) for seed in args.seeds or [study_seed(args.study)] for arm in args.arms]
    with ThreadPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(lambda run: run_arm(*run, args), runs))
    target = args.csv or ROOT / f"benchmarks/results/search_vs_defaults_{args.study.stem}.csv"
    write_rows(target, rows)
    summarise(rows)
    print(f"written {target}")


if __name__ == "__main__":
    main()
