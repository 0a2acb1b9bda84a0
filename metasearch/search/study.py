"""Study files: one YAML file says what to search, on which tasks, how, and for how long.

::

    name: sinusoid                    # the study's name in its storage
    task: {source: sinusoid, shots: 10, query_points: 10}
    space: ../search_spaces/mlp.yaml  # relative to this file, or an inline mapping
    sampler: {name: tpe, options: {n_startup_trials: 10}}
    pruner: {name: hyperband}
    objectives: [query_loss]          # then any of accuracy, n_parameters, adaptation_seconds
    budget: {iterations: 300, eval_every: 50, eval_tasks: 100}
    trials: 40
    timeout: null                     # seconds
    seed: 0
    storage: null                     # default: sqlite beside this file, <stem>.db
    artifacts: null                   # trial weights: a folder or s3://BUCKET; <stem>.weights
    device: auto                      # auto, cpu, cuda or cuda:N
    engine: auto                      # auto, vmap or grouped: how a meta-batch runs
    strategy: blackbox                # or darts: the architecture by differentiable search
    darts: {iterations: 200}          # strategy darts only; see metasearch.darts.DartsConfig
    checkpoint_every: null            # meta-iterations; default budget.eval_every, else 100
    population: 1                     # candidates of one shape meta-trained together
    heartbeat: {interval: 5, grace_period: 30}   # seconds; a silent trial is retried
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from typing import Any, Literal

import optuna
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from metasearch.darts.config import DartsConfig
from metasearch.devices import DEVICE, resolve_device
from metasearch.engines import EngineChoice
from metasearch.errors import SpecError
from metasearch.evaluation import Budget
from metasearch.evaluation.result import BudgetUnit
from metasearch.search.files import parse_yaml, read_bytes
from metasearch.search.space import SearchSpace, load_space, parse_space
from metasearch.search.suggest import seed_params
from metasearch.search.weights import bucket_of
from metasearch.spec import format_validation_error
from metasearch.tasks import SinusoidTask, TaskConfig, TaskSource, build_task_source

Objective = Literal["query_loss", "accuracy", "n_parameters", "adaptation_seconds"]
DIRECTIONS: dict[str, str] = {
    "query_loss": "minimize",
    "accuracy": "maximize",
    "n_parameters": "minimize",
    "adaptation_seconds": "minimize",
}
SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "random": optuna.samplers.RandomSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "gp": optuna.samplers.GPSampler,
}
PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "hyperband": optuna.pruners.HyperbandPruner,
    "median": optuna.pruners.MedianPruner,
    "none": optuna.pruners.NopPruner,
}
MAX_UNTIMED_ITERATIONS = 1_000_000  # meta-iterations per candidate without a time limit
MAX_UNTIMED_EXAMPLES = 100_000_000  # meta-training examples, likewise


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BudgetConfig(_Model):
    """What each candidate may spend (see :class:`metasearch.Budget`).

    ``unit`` is what the budget, ``eval_every`` and the pruner's rungs count in:
    ``iterations`` (meta-iterations; the budget is ``iterations``), ``seconds`` (of
    meta-training on the study's device; the budget is ``time_limit``) or ``examples``
    (meta-training examples; the budget is ``examples``). Seconds and examples cost the same
    for every candidate, so cheap and costly candidates compete at equal compute. Other limits
    given cap the candidate too (``iterations`` with unit seconds, say). ``min_iterations``
    prunes at once a candidate that cannot reach that many meta-iterations in its budget.
    """

    unit: BudgetUnit = "iterations"
    iterations: int | None = Field(None, ge=1)
    time_limit: float | None = Field(None, gt=0)
    examples: float | None = Field(None, gt=0)
    eval_every: float | None = Field(None, gt=0)
    eval_tasks: int = Field(100, ge=2, le=10_000)  # sampled at once
    min_iterations: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _amount_in_unit(self) -> BudgetConfig:
        needed = {"seconds": "time_limit", "examples": "examples"}.get(self.unit)
        if needed is not None and getattr(self, needed) is None:
            raise ValueError(f"unit {self.unit} counts the budget in {needed}: set {needed}")
        every = self.eval_every
        if self.unit == "iterations" and every is not None and every != int(every):
            raise ValueError("eval_every counts meta-iterations here: give a whole number")
        return self

    @property
    def amount(self) -> float | None:
        """The budget in its unit (``None``: the spec's iterations)."""
        return {"iterations": self.iterations, "seconds": self.time_limit}.get(
            self.unit, self.examples
        )

    @model_validator(mode="after")
    def _bounded(self) -> BudgetConfig:
        if self.time_limit is not None:
            return self
        if (self.iterations or 0) > MAX_UNTIMED_ITERATIONS:
            raise ValueError(
                f"iterations above {MAX_UNTIMED_ITERATIONS:,} need a time_limit (seconds)"
            )
        if self.iterations is None and (self.examples or 0) > MAX_UNTIMED_EXAMPLES:
            raise ValueError(
                f"examples above {MAX_UNTIMED_EXAMPLES:,} need a time_limit (seconds) or iterations"
            )
        return self

    def to_budget(self, seed: int, engine: EngineChoice = "auto") -> Budget:
        return Budget(
            iterations=self.iterations,
            unit=self.unit,
            time_limit=self.time_limit,
            examples=self.examples,
            eval_every=self.eval_every,
            eval_tasks=self.eval_tasks,
            min_iterations=self.min_iterations,
            seed=seed,
            engine=engine,
        )


class SamplerConfig(_Model):
    name: Literal["tpe", "cmaes", "random", "nsga2", "gp"]
    seed: int | None = None
    options: dict[str, Any] = {}

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:
            _check_options(SAMPLERS[info.data["name"]], options, {"seed"})
        return options


class PrunerConfig(_Model):
    name: Literal["hyperband", "median", "none"] = "none"
    options: dict[str, Any] = {}

    @field_validator("options")
    @classmethod
    def _known_options(cls, options: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" in info.data:
            _check_options(PRUNERS[info.data["name"]], options, set())
        return options


class SeedConfig(_Model):
    """A known-good configuration that the study evaluates before its sampler proposes any
    (Optuna's ``enqueue_trial``): ``name`` says where it comes from (a paper, a colleague),
    ``params`` gives the value of every dimension the space samples for it, by dotted field.
    Seeds are never pruned, so the study's best is never worse than its best seed."""

    name: str = Field(min_length=1)
    params: dict[str, Any]


class HeartbeatConfig(_Model):
    """How running trials show they are alive (database storages): a trial silent for
    ``grace_period`` seconds is failed and retried by another worker."""

    interval: int = Field(5, ge=1)
    grace_period: int = Field(30, ge=2)

    @field_validator("grace_period")
    @classmethod
    def _longer_than_interval(cls, grace: int, info: ValidationInfo) -> int:
        if grace <= info.data.get("interval", 0):
            raise ValueError("grace_period must be longer than interval")
        return grace


class StudyConfig(_Model):
    """A validated study file. Fields are checked in this order, so later ones see earlier ones.

    ``sampler`` defaults to TPE, or to NSGA-II with several objectives.
    """

    name: str = Field(min_length=1)
    task: TaskConfig  # declared with each source, in metasearch.tasks
    space: SearchSpace
    objectives: tuple[Objective, ...] = ("query_loss",)
    budget: BudgetConfig = BudgetConfig()
    sampler: SamplerConfig | None = Field(None, validate_default=True)
    pruner: PrunerConfig = PrunerConfig()
    trials: int = Field(50, ge=1)
    timeout: float | None = Field(None, gt=0)
    seed: int = 0
    storage: str | None = None
    artifacts: str | None = Field(None, min_length=1)
    device: str = "auto"
    engine: EngineChoice = "auto"
    threads: int | None = Field(None, ge=1, le=1024)
    strategy: Literal["blackbox", "darts"] = "blackbox"
    darts: DartsConfig | None = Field(None, validate_default=True)
    checkpoint_every: int | None = Field(None, ge=1)
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    population: int = Field(1, ge=1, le=256)
    seeds: tuple[SeedConfig, ...] = ()

    _path: Path | None = PrivateAttr(None)
    _sha256: str | None = PrivateAttr(None)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | Path | None = None) -> StudyConfig:
        """Checks plain data as a study; a ``space`` path is read relative to ``base_dir``."""
        return _validate(data, base_dir, "study")

    @property
    def path(self) -> Path | None:
        """The study file this came from, if any."""
        return self._path

    @property
    def file_sha256(self) -> str | None:
        """SHA-256 of the study file's bytes, if it came from a file."""
        return self._sha256

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @field_validator("space", mode="before")
    @classmethod
    def _read_space(cls, space: Any, info: ValidationInfo) -> Any:
        if isinstance(space, (str, Path)):
            base = Path((info.context or {}).get("base_dir") or ".")
            path = base / space
            if not os.path.lexists(path):  # a link that leads nowhere: the reader says why
                raise ValueError(
                    f"cannot read search space {os.path.normpath(path)}: no such file (a "
                    "relative space: is read from the study file's folder); check the path"
                )
            return load_space(path)
        if isinstance(space, dict):
            return parse_space(space)
        return space

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, objectives: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not objectives or objectives[0] != "query_loss":
            raise ValueError("the first objective must be query_loss")
        if len(set(objectives)) < len(objectives):
            raise ValueError("an objective is listed twice")
        task = info.data.get("task")
        if "accuracy" in objectives and isinstance(task, SinusoidTask):
            raise ValueError("accuracy needs a classification task; sinusoid is regression")
        return objectives

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, sampler: SamplerConfig | None, info: ValidationInfo) -> SamplerConfig:
        several = len(info.data.get("objectives", ())) > 1
        if sampler is None:  # the default
            return SamplerConfig(name="nsga2" if several else "tpe")
        if sampler.name == "cmaes" and several:
            raise ValueError("cmaes cannot optimize several objectives; use nsga2, tpe or gp")
        return sampler

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, pruner: PrunerConfig, info: ValidationInfo) -> PrunerConfig:
        if pruner.name == "none":
            return pruner
        if len(info.data.get("objectives", ())) > 1:
            raise ValueError(
                "Optuna cannot prune multi-objective studies; use pruner: {name: none} "
                "or a single objective"
            )
        budget = info.data.get("budget")
        if budget is not None and budget.eval_every is None:
            raise ValueError(
                f"the {pruner.name} pruner needs intermediate scores: set budget.eval_every"
            )
        return pruner

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not DEVICE.fullmatch(device):
            raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
        return device

    @field_validator("darts")
    @classmethod
    def _darts(cls, darts: DartsConfig | None, info: ValidationInfo) -> DartsConfig | None:
        if info.data.get("strategy") != "darts":
            if darts is not None:
                raise ValueError("a darts section needs strategy: darts")
            return None
        if isinstance(info.data.get("task"), SinusoidTask):
            raise ValueError("strategy darts searches convolutional cells; it needs image tasks")
        return darts or DartsConfig()

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: tuple[SeedConfig, ...], info: ValidationInfo) -> tuple[SeedConfig, ...]:
        space = info.data.get("space")
        if len({seed.name for seed in seeds}) < len(seeds):
            raise ValueError("two seeds have the same name")
        if space is None or info.data.get("strategy") == "darts":
            return seeds
        for seed in seeds:
            try:
                seed_params(space, seed.params)
            except ValueError as error:
                raise ValueError(f"seed {seed.name!r}: {error}") from None
        return seeds

    @field_validator("artifacts")
    @classmethod
    def _artifacts_folder(cls, artifacts: str | None, info: ValidationInfo) -> str | None:
        """A relative folder is relative to the study file, like ``space``."""
        if artifacts is None or bucket_of(artifacts) is not None:
            return artifacts
        return str(Path((info.context or {}).get("base_dir") or ".") / artifacts)

    @field_validator("population")
    @classmethod
    def _population(cls, population: int, info: ValidationInfo) -> int:
        if population > 1 and info.data.get("strategy") == "darts":
            raise ValueError("strategy darts searches an architecture per trial; use population: 1")
        return population


def load_study_file(path: str | Path) -> StudyConfig:
    """Reads and checks a study file. Its storage defaults to ``<stem>.db`` beside it (SQLite)."""
    content = read_bytes(path, "study file")  # first: refuses a link loop before resolve
    path = Path(path).resolve()
    data = parse_yaml(content, f"study file {path}")
    if data.get("storage") is None:
        data["storage"] = f"sqlite:///{path.with_suffix('.db')}"
    config = _validate(data, path.parent, f"study file {path}")
    config._path = path
    config._sha256 = hashlib.sha256(content).hexdigest()
    return config


def build_source(
    config: StudyConfig,
    data_root: str | Path | None = None,
    device: str | torch.device | None = None,
) -> TaskSource:
    """The study's task source on ``device`` (default: the study's ``device``); see
    :func:`~metasearch.tasks.build_task_source`."""
    return build_task_source(
        config.task, data_root, resolve_device(str(device) if device else config.device)
    )


def _validate(data: dict[str, Any], base_dir: str | Path | None, what: str) -> StudyConfig:
    try:
        return StudyConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as error:
        raise SpecError(format_validation_error(error, what)) from None


def _check_options(factory: type, options: dict[str, Any], reserved: set[str]) -> None:
    allowed = set(inspect.signature(factory).parameters) - reserved
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"unknown option {', '.join(unknown)} for {factory.__name__}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
