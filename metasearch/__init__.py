"""metasearch: search for the best few-shot learner.

The evaluator in one line::

    result = metasearch.evaluate(spec, source, metasearch.Budget(iterations=500))
"""

from metasearch.errors import DataError, MetasearchError, SpecError
from metasearch.evaluation import Budget, EvaluationResult, evaluate
from metasearch.spec import (
    ArchitectureSpec,
    InitSpec,
    InnerLoopSpec,
    LearnerSpec,
    OuterLoopSpec,
)
from metasearch.tasks import SinusoidSource, TaskBatch, TaskSource, image_folder, omniglot

__version__ = "0.1.0"

__all__ = [
    "ArchitectureSpec",
    "Budget",
    "DataError",
    "EvaluationResult",
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
    "image_folder",
    "omniglot",
]
