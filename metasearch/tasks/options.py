"""The options of a task source, declared once: a study file's ``task:`` section and the Python
factory (``omniglot(...)``) both validate them with the source's model, so they take the same
names, defaults and limits."""

from __future__ import annotations

import os
from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from metasearch.errors import SpecError
from metasearch.spec import format_validation_error
from metasearch.tasks.base import TaskSource

if TYPE_CHECKING:
    from typing_extensions import Self


class TaskOptions(BaseModel):
    """Base of each source's options; ``source`` names the source and tells the models apart.

    ``added_later`` lists options that arrived after studies and exported learners began storing
    their task: they dump only when set away from their default, so a task stored before them
    still compares equal to the same task read today (and the study resumes).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    added_later: ClassVar[tuple[str, ...]] = ()
    source: str

    @classmethod
    def of(cls, options: dict[str, Any]) -> Self:
        """``options`` checked as this source's (a Python factory's keyword arguments)."""
        try:
            return cls(**options)
        except ValidationError as error:
            name = cls.model_fields["source"].default
            raise SpecError(format_validation_error(error, f"{name} task")) from None

    def options(self) -> dict[str, Any]:
        """Every option but ``source``, by name."""
        return {name: getattr(self, name) for name in type(self).model_fields if name != "source"}

    @abstractmethod
    def build(
        self, data_root: str | os.PathLike[str] | None, device: torch.device | str
    ) -> TaskSource:
        """The task source these options describe, its data on ``device``; image data come from
        ``data_root``, else ``$METASEARCH_DATA``, else ``./data``."""

    @model_validator(mode="before")
    @classmethod
    def _known_options(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:
                allowed = [name for name in cls.model_fields if name != "source"]
                raise ValueError(
                    f"unknown option {', '.join(map(str, unknown))} for source "
                    f"{cls.model_fields['source'].default}; allowed: {', '.join(allowed)}"
                )
        return data

    @model_serializer(mode="wrap")
    def _without_later_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            fields = type(self).model_fields
            for name in self.added_later:
                if getattr(self, name) == fields[name].default:
                    del data[name]
        return data
