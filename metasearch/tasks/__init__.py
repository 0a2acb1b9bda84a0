"""Task sources: where N-way K-shot tasks come from."""

from metasearch.tasks.base import SPLITS, Split, TaskBatch, TaskKind, TaskSource
from metasearch.tasks.classification import ClassificationSource
from metasearch.tasks.image_folder import image_folder
from metasearch.tasks.omniglot import omniglot
from metasearch.tasks.sinusoid import SinusoidSource

__all__ = [
    "SPLITS",
    "ClassificationSource",
    "SinusoidSource",
    "Split",
    "TaskBatch",
    "TaskKind",
    "TaskSource",
    "image_folder",
    "omniglot",
]
