"""``export_learner`` and ``load_learner``: a learner to a directory and back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from metasearch.errors import ArtifactError
from metasearch.export.artifact import (
    EXPORT_AGAIN,
    METADATA_FILE,
    WEIGHTS_FILE,
    read_artifact,
    shape_mismatch,
    write_artifact,
)
from metasearch.export.exported import ExportedLearner
from metasearch.export.transforms import make_transform
from metasearch.learners import Learner, build_learner
from metasearch.spec import LearnerSpec, format_validation_error
from metasearch.tasks import TaskKind
from metasearch.tasks.images import MAX_IMAGE_SIZE

MAX_OUTPUTS = 10_000
InputSide = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIZE)]


class _Content(BaseModel):
    """The learner's part of ``learner.json`` (the artifact adds format, provenance, weights);
    its sizes are bounded, so nothing large is built from it."""

    model_config = ConfigDict(extra="ignore")

    spec: dict[str, Any]
    task_kind: TaskKind
    n_outputs: PositiveInt = Field(le=MAX_OUTPUTS)
    input_shape: tuple[InputSide, ...] = Field(min_length=1, max_length=3)
    input_transform: dict[str, Any]
    source: dict[str, Any]
    scores: dict[str, Any]


def export_learner(
    learner: Learner,
    out_dir: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...],
    source_description: dict[str, Any] | None = None,
    input_transform: dict[str, Any] | None = None,
    scores: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Writes ``learner`` to ``out_dir`` as ``learner.json`` and ``weights.safetensors``,
    replacing an earlier export there, and returns the directory.

    ``input_shape``, ``source_description`` and ``input_transform`` come from the task source
    (``source.input_shape``, ``describe()``, ``input_transform()``; without a transform, inputs
    pass as given); ``scores`` and ``provenance`` (a study name, a trial number) are stored as
    given, all as JSON.
    """
    input_shape = tuple(input_shape)
    source_description, scores = source_description or {}, scores or {}
    input_transform = input_transform or {}
    make_transform(input_transform, input_shape)  # fail now rather than when loading
    tensors = learner.state_tensors()
    problem = shape_mismatch(
        _shapes(build_learner(learner.spec, input_shape, learner.n_outputs, learner.task_kind)),
        {n: tuple(t.shape) for n, t in tensors.items()},
    )
    if problem:
        raise ValueError(f"input_shape {list(input_shape)} does not fit this learner: {problem}")
    content = _Content(
        spec=learner.spec.to_dict(),
        task_kind=learner.task_kind,
        n_outputs=learner.n_outputs,
        input_shape=input_shape,
        input_transform=input_transform,
        source=source_description,
        scores=scores,
    )
    directory = Path(out_dir)
    write_artifact(directory, content.model_dump(mode="json"), tensors, provenance or {})
    return directory


def load_learner(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> ExportedLearner:
    """The learner exported to the directory ``path``, on ``device``; raises
    :class:`ArtifactError` where the export is missing, corrupt or from another format."""
    directory = Path(path)
    metadata, tensors = read_artifact(directory)
    where = directory / METADATA_FILE
    try:
        content = _Content.model_validate(metadata)
        spec = LearnerSpec.from_dict(content.spec)
        transform = make_transform(content.input_transform, content.input_shape)
        described = (spec, content.input_shape, content.n_outputs, content.task_kind)
        with torch.device("meta"):  # shapes only: nothing is allocated before they fit
            outline = build_learner(*described, device="meta")
    except ValidationError as error:
        raise ArtifactError(
            f"{format_validation_error(error, str(where))}; {EXPORT_AGAIN}"
        ) from None
    except ValueError as error:  # a SpecError, a bad transform or a spec-shape clash
        raise ArtifactError(f"{where}: {error}; {EXPORT_AGAIN}") from None
    problem = shape_mismatch(_shapes(outline), {n: tuple(t.shape) for n, t in tensors.items()})
    if problem:
        raise ArtifactError(
            f"{directory / WEIGHTS_FILE} does not fit the learner {METADATA_FILE} describes: "
            f"{problem}; {EXPORT_AGAIN}"
        )
    learner = build_learner(*described, device=device)
    learner.load_state_tensors(tensors)
    return ExportedLearner(learner, metadata, content.input_shape, transform)


def _shapes(learner: Learner) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in learner.state_tensors().items()}
