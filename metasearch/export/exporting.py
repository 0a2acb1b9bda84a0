"""``export_learner`` and ``read_learner``: a learner to a directory and back (wrapped, for
use, by :class:`~metasearch.export.ExportedLearner`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError
from torch import Tensor

from metasearch.errors import ArtifactError
from metasearch.export.artifact import (
    EXPORT_AGAIN,
    METADATA_FILE,
    WEIGHTS_FILE,
    read_artifact,
    shape_mismatch,
    write_artifact,
)
from metasearch.export.card import model_card
from metasearch.export.transforms import Transform, make_transform
from metasearch.learners import Learner, build_learner
from metasearch.spec import LearnerSpec, NormalizationAtPrediction, format_validation_error
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
    normalization_at_prediction: NormalizationAtPrediction


EXPORTED_NORMALIZATION: NormalizationAtPrediction = "support"
"""How an exported learner normalizes when it predicts, unless told otherwise: by its support
set's statistics, so that a query's class does not depend on the queries beside it."""
LEGACY_RATES = "inner_lr."
OLD_SCORE_NAMES = {"loss": "query_loss", "loss_ci95": "query_loss_ci95"}
"""Format version 2 keyed the meta-test scores ``loss``; version 3 names them as the
validation scores are named."""


def export_learner(
    learner: Learner,
    out_dir: str | os.PathLike[str],
    *,
    input_shape: tuple[int, ...],
    source_description: dict[str, Any] | None = None,
    input_transform: dict[str, Any] | None = None,
    scores: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    normalization: NormalizationAtPrediction = EXPORTED_NORMALIZATION,
) -> Path:
    """Writes ``learner`` to ``out_dir`` as ``learner.json``, ``weights.safetensors`` and a
    ``README.md`` model card made from the metadata, replacing an earlier export there, and
    returns the directory.

    ``input_shape``, ``source_description`` and ``input_transform`` come from the task source
    (``source.input_shape``, ``describe()``, ``input_transform()``; without a transform, inputs
    pass as given); ``scores`` (``validation`` and ``test``, each keyed ``query_loss``,
    ``accuracy`` and their ``_ci95``) and ``provenance`` (a study name, a trial number) are
    stored as given, all as JSON. ``normalization`` is how the loaded learner normalizes by
    default when it predicts (``support`` or ``transductive``, see
    :class:`~metasearch.spec.ArchitectureSpec`).
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
        normalization_at_prediction=normalization,
    )
    directory = Path(out_dir)
    write_artifact(
        directory, content.model_dump(mode="json"), tensors, provenance or {}, model_card
    )
    return directory


@dataclass(frozen=True)
class ReadLearner:
    """What :func:`read_learner` finds: the learner, the whole (upgraded) ``learner.json``,
    the input shape, the transform of raw inputs and the recorded normalization."""

    learner: Learner
    metadata: dict[str, Any]
    input_shape: tuple[int, ...]
    transform: Transform
    normalization: NormalizationAtPrediction


def read_learner(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> ReadLearner:
    """The learner exported to the directory ``path``, on ``device``; format version 2's
    metadata comes upgraded (scores renamed, transductive normalization, as those learners
    predicted). Raises :class:`ArtifactError` where the export is missing, corrupt or from
    another format."""
    directory = Path(path)
    metadata, tensors = read_artifact(directory)
    metadata = _upgraded(metadata)
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
    tensors = without_unused_rates(tensors, outline)
    problem = shape_mismatch(_shapes(outline), {n: tuple(t.shape) for n, t in tensors.items()})
    if problem:
        raise ArtifactError(
            f"{directory / WEIGHTS_FILE} does not fit the learner {METADATA_FILE} describes: "
            f"{problem}; {EXPORT_AGAIN}"
        )
    learner = build_learner(*described, device=device)
    learner.load_state_tensors(tensors)
    return ReadLearner(
        learner, metadata, content.input_shape, transform, content.normalization_at_prediction
    )


def _upgraded(metadata: dict[str, Any]) -> dict[str, Any]:
    """Format version 2's metadata as version 3 holds it: meta-test scores renamed
    (:data:`OLD_SCORE_NAMES`) and transductive normalization, as those learners predicted."""
    if metadata["format_version"] != 2:
        return metadata
    upgraded = metadata | {"normalization_at_prediction": "transductive"}
    scores = metadata.get("scores")
    test = scores.get("test") if isinstance(scores, dict) else None
    if isinstance(test, dict):
        test = {OLD_SCORE_NAMES.get(key, key): value for key, value in test.items()}
        upgraded["scores"] = scores | {"test": test}
    return upgraded


def without_unused_rates(tensors: dict[str, Tensor], learner: Learner) -> dict[str, Tensor]:
    """``tensors`` without the inner learning rates (``inner_lr.*``) that learners of an
    algorithm with no inner loop (Prototypical Networks) were saved with before algorithms
    owned their meta-state; they never took part in a prediction."""
    if any(name.startswith(LEGACY_RATES) for name in learner.state_tensors()):
        return tensors
    return {n: t for n, t in tensors.items() if not n.startswith(LEGACY_RATES)}


def _shapes(learner: Learner) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in learner.state_tensors().items()}
