"""Exported learners: a directory with ``learner.json``, ``weights.safetensors`` and a
``README.md`` model card.

``export_learner`` (or :meth:`ExportedLearner.save`) writes one; ``load_learner`` (or
:meth:`ExportedLearner.from_pretrained`) reads it back, checked, as an :class:`ExportedLearner`
that adapts to a new task from its support set.
"""

from metasearch.errors import ArtifactError
from metasearch.export.exported import AdaptedLearner, ExportedLearner, load_learner
from metasearch.export.exporting import export_learner

__all__ = ["AdaptedLearner", "ArtifactError", "ExportedLearner", "export_learner", "load_learner"]
