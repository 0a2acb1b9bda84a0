"""``metasearch train``: meta-train a chosen configuration again with a larger budget, then
export it.

This is the protocol of architecture search (Zoph et al., 2018; Liu et al., 2019): search with
a small budget per candidate, then train the winner long. The retraining is one candidate of
the evaluator like any trial, checkpointed as it goes, so running the same command again after
an interruption resumes it. ``lr_schedule`` replaces the configuration's meta learning-rate
schedule for the retraining: a short trial cannot tell a step schedule from a constant rate, while
a cosine schedule anneals over whatever budget it is given (Loshchilov and Hutter, 2017).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FixedTrial
from rich.console import Console

from metasearch.commands.common import load_config, load_existing_study, study_storage
from metasearch.commands.exporting import TRAINING_KEYS, VALIDATION_KEYS, export_scored, pick_trial
from metasearch.commands.live import TrainingDisplay
from metasearch.commands.stopping import GracefulStop
from metasearch.commands.threads import use_threads
from metasearch.errors import MetasearchError
from metasearch.evaluation import Budget, CheckpointStore, TrainingInterrupted, evaluate
from metasearch.search.runner import open_study
from metasearch.search.storage import redact
from metasearch.search.study import StudyConfig, build_source
from metasearch.search.suggest import seed_params, suggest
from metasearch.search.weights import study_files
from metasearch.spec import LearnerSpec, LrSchedule

EVALUATIONS = 10
"""Validation points over a retraining, for its log: one every tenth of the budget."""
CHECKPOINT_EVERY = 100
"""Meta-iterations between a retraining's checkpoints."""


@dataclass(frozen=True)
class RetrainBudget:
    """What the retraining may spend: exactly one of seconds, meta-iterations or examples."""

    seconds: float | None = None
    iterations: int | None = None
    examples: float | None = None

    def to_budget(self, config: StudyConfig) -> Budget:
        given = {
            unit: amount
            for unit, amount in (
                ("seconds", self.seconds),
                ("iterations", self.iterations),
                ("examples", self.examples),
            )
            if amount is not None
        }
        if len(given) != 1:
            raise MetasearchError(
                "give the retraining budget as one of --seconds, --iterations or --examples"
            )
        ((unit, amount),) = given.items()
        if not amount > 0:
            raise MetasearchError(f"--{unit} must be > 0")
        return Budget(
            unit=unit,  # type: ignore[arg-type]
            iterations=int(amount) if unit == "iterations" else None,
            time_limit=amount if unit == "seconds" else None,
            examples=amount if unit == "examples" else None,
            eval_every=amount / EVALUATIONS if unit != "iterations" else max(1, amount // 10),
            eval_tasks=config.budget.eval_tasks,
            seed=config.seed,
            engine=config.engine,
        )


def train_and_export(
    study_file: Path,
    choice: str,
    seed_name: str | None,
    budget: RetrainBudget,
    out: Path,
    storage: str | None,
    data_root: Path | None,
    device: str | None,
    console: Console,
    threads: int | None = None,
    lr_schedule: LrSchedule | None = None,
) -> int:
    """Retrains trial ``choice`` ('best' or a number) or the study file's seed ``seed_name``
    with ``budget`` on ``threads`` CPU threads (default: the study file's, else torch's), with
    the meta learning-rate schedule ``lr_schedule`` where given (else the configuration's), and
    exports it to ``out``; returns the exit code (that of a signal where one stopped it after a
    checkpoint)."""
    config = load_config(study_file)
    storage_url = study_storage(config, storage)
    train_budget = budget.to_budget(config)
    if seed_name is not None:  # no search needed: the study is made where it is missing
        spec, label = _seed_spec(config, seed_name), f"seed {seed_name}"
        study = open_study(config, storage_url)
        provenance: dict[str, object] = {"seed": seed_name}
    else:
        study = load_existing_study(config, storage_url)
        chosen = pick_trial(study, choice)
        spec, label = LearnerSpec.from_dict(chosen.user_attrs["spec"]), f"trial {chosen.number}"
        provenance = {"trial": chosen.number}
    if lr_schedule is not None and lr_schedule != spec.outer.lr_schedule:
        provenance["lr_schedule_replaced"] = spec.outer.lr_schedule
        outer = spec.outer.model_copy(update={"lr_schedule": lr_schedule})
        spec = spec.model_copy(update={"outer": outer})
    use_threads(threads or config.threads)
    source = build_source(config, data_root, device)
    files = study_files(storage_url, study, config.artifacts)  # None in memory: no checkpoints
    name = f"{label.replace(' ', '-')}-{_retraining_key(spec, train_budget)}"
    checkpoints = (
        None
        if files is None
        else CheckpointStore(files.folder / "retrain" / name, CHECKPOINT_EVERY)
    )
    console.print(
        f"meta-training {label} of study {config.name} for {_describe(train_budget)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    display = TrainingDisplay(console, label)

    def report(step: int, validation_loss: float) -> bool:
        console.print(
            f"  at {step} {train_budget.unit}: validation query loss {validation_loss:.4g}"
        )
        return False

    with GracefulStop(console) as stop, display.shown():
        try:
            result = evaluate(
                spec,
                source,
                train_budget,
                report=report,
                checkpoints=checkpoints,
                stop=stop,
                observe=display.observe,
            )
        except TrainingInterrupted as interrupted:
            console.print(f"stopped at meta-iteration {interrupted.iteration}; run again to resume")
            return stop.exit_code
    if result.learner is None:
        raise MetasearchError(f"{label} failed to meta-train: {result.reason}")
    data = result.to_dict()
    export_scored(
        result.learner,
        config,
        source,
        out,
        label=label,
        validation={key: data[key] for key in VALIDATION_KEYS},
        training={key: data[key] for key in TRAINING_KEYS} | {"budget": _describe(train_budget)},
        provenance={
            "study": config.name,
            **provenance,
            "retrained": True,
            "study_file_sha256": config.file_sha256,
            "storage": redact(storage_url),
        },
        console=console,
    )
    if checkpoints is not None:
        checkpoints.clear()
    return 0


def _seed_spec(config: StudyConfig, name: str) -> LearnerSpec:
    seeds = {seed.name: seed for seed in config.seeds}
    if name not in seeds:
        known = ", ".join(seeds) or "none"
        raise MetasearchError(f"study {config.name!r} has no seed {name!r}; its seeds: {known}")
    return suggest(FixedTrial(seed_params(config.space, seeds[name].params)), config.space)


def _retraining_key(spec: LearnerSpec, budget: Budget) -> str:
    """Names the checkpoints of one retraining: the same spec and budget resume them."""
    what = {"spec": spec.to_dict(), "unit": budget.unit, "amount": _describe(budget)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def _describe(budget: Budget) -> str:
    if budget.unit == "seconds":
        return f"{budget.time_limit:g} seconds"
    if budget.unit == "examples":
        return f"{budget.examples:g} examples"
    return f"{budget.iterations} meta-iterations"
