"""Meta-training and scoring of one candidate learner."""

from metasearch.evaluation.evaluator import Report, check_compatible, evaluate
from metasearch.evaluation.result import Budget, EvaluationResult
from metasearch.evaluation.scoring import Scores, held_out_tasks, mean_ci95, score

__all__ = [
    "Budget",
    "EvaluationResult",
    "Report",
    "Scores",
    "check_compatible",
    "evaluate",
    "held_out_tasks",
    "mean_ci95",
    "score",
]
