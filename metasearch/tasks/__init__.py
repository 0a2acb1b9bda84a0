"""Task sources: where N-way K-shot tasks come from, and the options of each, declared once."""

from metasearch.tasks.base import SPLITS, Split, TaskBatch, TaskKind, TaskSource
from metasearch.tasks.classification import ClassificationSource
from metasearch.tasks.config import TaskConfig, build_task_source, parse_task
from metasearch.tasks.image_folder import ImageFolderTask, image_folder
from metasearch.tasks.omniglot import OmniglotTask, omniglot
from metasearch.tasks.options import TaskOptions
from metasearch.tasks.sinusoid import SinusoidSource, SinusoidTask

__all__ = [
    "SPLITS",
    "ClassificationSource",
    "ImageFolderTask",
    "OmniglotTask",
    "SinusoidSource",
    "SinusoidTask",
    "Split",
    "TaskBatch",
    "TaskConfig",
    "TaskKind",
    "TaskOptions",
    "TaskSource",
    "build_task_source",
    "image_folder",
    "omniglot",
    "parse_task",
]
