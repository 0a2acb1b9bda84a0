"""metasearch: search for the best few-shot learner.

The evaluator in one line::

    result = metasearch.evaluate(spec, source, metasearch.Budget(iterations=500))

An exported learner, adapted to a new task::

    learner = metasearch.load_learner("learner/")
    predict = learner.adapt(support_x, support_y)

The names below are imported on first use, so that ``import metasearch`` (and the command's
``--help``) does not pay for torch and Optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from metasearch.version import __version__ as __version__

_HOMES = {
    "AdaptedLearner": "metasearch.export",
    "ArchitectureSpec": "metasearch.spec",
    "ArtifactError": "metasearch.errors",
    "Budget": "metasearch.evaluation",
    "DataError": "metasearch.errors",
    "EvaluationResult": "metasearch.evaluation",
    "ExportedLearner": "metasearch.export",
    "InitSpec": "metasearch.spec",
    "InnerLoopSpec": "metasearch.spec",
    "LearnerSpec": "metasearch.spec",
    "MetasearchError": "metasearch.errors",
    "OuterLoopSpec": "metasearch.spec",
    "SinusoidSource": "metasearch.tasks",
    "SpecError": "metasearch.errors",
    "TaskBatch": "metasearch.tasks",
    "TaskSource": "metasearch.tasks",
    "evaluate": "metasearch.evaluation",
    "export_learner": "metasearch.export",
    "image_folder": "metasearch.tasks",
    "load_learner": "metasearch.export",
    "omniglot": "metasearch.tasks",
}
__all__ = [
    "AdaptedLearner",
    "ArchitectureSpec",
    "ArtifactError",
    "Budget",
    "DataError",
    "EvaluationResult",
    "ExportedLearner",
    "InitSpec",
    "InnerLoopSpec",
    "LearnerSpec",
    "MetasearchError",
    "OuterLoopSpec",
    "SinusoidSource",
    "SpecError",
    "TaskBatch",
    "TaskSource",
    "evaluate",
    "export_learner",
    "image_folder",
    "load_learner",
    "omniglot",
]

if TYPE_CHECKING:
    from metasearch.errors import ArtifactError, DataError, MetasearchError, SpecError
    from metasearch.evaluation import Budget, EvaluationResult, evaluate
    from metasearch.export import AdaptedLearner, ExportedLearner, export_learner, load_learner
    from metasearch.spec import (
        ArchitectureSpec,
        InitSpec,
        InnerLoopSpec,
        LearnerSpec,
        OuterLoopSpec,
    )
    from metasearch.tasks import SinusoidSource, TaskBatch, TaskSource, image_folder, omniglot


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'metasearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
