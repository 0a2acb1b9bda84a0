"""Exported learners: a directory with ``learner.json`` and ``weights.safetensors``.

``export_learner`` writes one; ``load_learner`` reads it back, checked, as an
:class:`ExportedLearner` that adapts to a new task from its support set.
"""

from metasearch.errors import ArtifactError
from metasearch.export.exported import AdaptedLearner, ExportedLearner
from metasearch.export.exporting import export_learner, load_learner

__all__ = ["AdaptedLearner", "ArtifactError", "ExportedLearner", "export_learner", "load_learner"]
