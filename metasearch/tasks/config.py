"""A task as plain data (a study file's ``task:``, an exported learner's task): the options of
one source, told apart by ``source``, and the task source they describe."""

from __future__ import annotations

import os
from typing import Annotated, Any

import torch
from pydantic import Field, TypeAdapter, ValidationError

from metasearch.errors import SpecError
from metasearch.spec import format_validation_error
from metasearch.tasks.base import TaskSource
from metasearch.tasks.image_folder import ImageFolderTask
from metasearch.tasks.omniglot import OmniglotTask
from metasearch.tasks.sinusoid import SinusoidTask

TaskConfig = Annotated[SinusoidTask | OmniglotTask | ImageFolderTask, Field(discriminator="source")]
_TASK: TypeAdapter[TaskConfig] = TypeAdapter(TaskConfig)


def parse_task(data: dict[str, Any]) -> TaskConfig:
    """``data`` checked as a task; a mistake is one :class:`SpecError` line."""
    try:
        return _TASK.validate_python(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, "task")) from None


def build_task_source(
    config: TaskConfig | dict[str, Any],
    data_root: str | os.PathLike[str] | None = None,
    device: torch.device | str = "cpu",
) -> TaskSource:
    """The task source ``config`` (a model or its plain data) describes, its data on ``device``.
    Image data come from ``data_root``, else ``$METASEARCH_DATA``, else ``./data``; a relative
    image-folder root is read under it, an absolute one replaces it."""
    if isinstance(config, dict):
        config = parse_task(config)
    return config.build(data_root, device)
