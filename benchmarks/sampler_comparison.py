"""TPE with Hyperband pruning against random search on a shipped study, over several seeds.

Both arms run the same study file (task, search space, per-candidate budget, number of
trials) and differ only in the sampler and pruner; each seed seeds the sampler and the
candidates' meta-training alike. The study's per-candidate time limit is dropped, so that every
candidate gets the same meta-iterations whatever else the machine is doing. The score of a run
is the study's final query loss: the best complete trial's validation query loss, on the fixed
held-out tasks every candidate meets.

    python benchmarks/sampler_comparison.py                       # sinusoid, seeds 0-4
    python benchmarks/sampler_comparison.py --seeds 0 1 2 --trials 20 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from metasearch.search import StudyConfig, load_study_file, run_study

ARMS = {
    "tpe+hyperband": {"sampler": "tpe", "pruner": "hyperband"},
    "random": {"sampler": "random", "pruner": "none"},
}


def run_arm(base: StudyConfig, arm: str, seed: int, trials: int) -> dict[str, object]:
    torch.set_num_threads(1)  # runs share the cores; one thread each keeps them from fighting
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    settings = ARMS[arm]
    options = base.sampler.options if settings["sampler"] == base.sampler.name else {}
    config = base.model_copy(
        update={
            "name": f"{base.name}-{arm}-{seed}",
            "seed": seed,
            "sampler": base.sampler.model_copy(
                update={"name": settings["sampler"], "options": options, "seed": seed}
            ),
            "pruner": base.pruner.model_copy(update={"name": settings["pruner"], "options": {}}),
            "budget": base.budget.model_copy(update={"time_limit": None}),
        }
    )
    start = time.perf_counter()
    study = run_study(config, n_trials=trials, storage=optuna.storages.InMemoryStorage())
    seconds = time.perf_counter() - start
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    iterations = sum(t.user_attrs.get("result", {}).get("iterations", 0) for t in study.trials)
    return {
        "arm": arm,
        "seed": seed,
        "trials": len(study.trials),
        "complete": len(complete),
        "pruned": len(study.get_trials(states=(TrialState.PRUNED,))),
        "failed": len(study.get_trials(states=(TrialState.FAIL,))),
        "best_query_loss": min(t.value for t in complete),
        "meta_iterations": iterations,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="studies/sinusoid.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--trials", type=int, default=None, help="default: the study's")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, one thread each")
    parser.add_argument("--csv", default="benchmarks/results/sampler_comparison_sinusoid.csv")
    args = parser.parse_args()
    base = load_study_file(args.study)
    trials = args.trials or base.trials
    runs = [(seed, arm) for seed in args.seeds for arm in ARMS]  # interleaved: same machine load
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_arm, base, arm, seed, trials) for seed, arm in runs]
        rows = []
        for future in futures:
            rows.append(future.result())
            print(", ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(
        f"\n{base.name}: {trials} trials per run; {platform.processor() or platform.machine()}"
        f", torch {torch.__version__}, optuna {optuna.__version__}"
    )
    best = {arm: [r["best_query_loss"] for r in rows if r["arm"] == arm] for arm in ARMS}
    for arm, values in best.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{arm:>14}: best query loss {statistics.mean(values):.4f} ± {spread:.4f} (sd)")
    wins = sum(t < r for t, r in zip(best["tpe+hyperband"], best["random"]))
    print(f"tpe+hyperband beats random on {wins} of {len(args.seeds)} seeds")


if __name__ == "__main__":
    main()
