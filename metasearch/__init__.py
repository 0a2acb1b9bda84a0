"""metasearch: search for the best few-shot learner.

The evaluator in one line::

    result = metasearch.evaluate(spec, source, metasearch.Budget(iterations=500))

An exported learner, adapted to a new task::

    learner = metasearch.load_learner("learner/")
    predict = learner.adapt(support_x, support_y)
"""

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

__version__ = "0.1.0"

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
