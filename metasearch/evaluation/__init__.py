"""Meta-training (one trainer for a candidate, a population or a search) and scoring."""

from metasearch.evaluation.checkpoint import CheckpointStore, TrainingState
from metasearch.evaluation.evaluator import (
    MetaTraining,
    Report,
    TrainingInterrupted,
    check_compatible,
    evaluate,
    train,
)
from metasearch.evaluation.population import check_population, evaluate_population
from metasearch.evaluation.progress import Observer, TrainingProgress
from metasearch.evaluation.protocol import META_TEST_TASKS, PROTOCOLS, Protocol
from metasearch.evaluation.result import Budget, EvaluationResult
from metasearch.evaluation.scoring import Scores, held_out_tasks, mean_ci95, score

__all__ = [
    "META_TEST_TASKS",
    "PROTOCOLS",
    "Budget",
    "CheckpointStore",
    "EvaluationResult",
    "MetaTraining",
    "Observer",
    "Protocol",
    "Report",
    "Scores",
    "TrainingInterrupted",
    "TrainingProgress",
    "TrainingState",
    "check_compatible",
    "check_population",
    "evaluate",
    "evaluate_population",
    "held_out_tasks",
    "mean_ci95",
    "score",
    "train",
]
