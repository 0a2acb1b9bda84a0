"""``metasearch evaluate`` and ``adapt``: using an exported learner."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from metasearch.devices import resolve_device
from metasearch.errors import DataError, MetasearchError
from metasearch.evaluation import Protocol
from metasearch.export import ExportedLearner, load_learner
from metasearch.export.exported import NORMALIZATIONS
from metasearch.learners.networks import has_batch_norm
from metasearch.spec import NormalizationAtPrediction
from metasearch.tasks import ClassificationSource, build_task_source
from metasearch.tasks.images import IMAGE_SUFFIXES, image_files, read_image, refusing_bombs


def evaluate_learner(
    learner_dir: Path,
    ways: int | None,
    shots: int | None,
    episodes: int,
    protocol_name: str,
    classes_from: str | None,
    data_root: Path | None,
    device: str | None,
    normalization: str | None = None,
) -> None:
    """Scores the learner on ``episodes`` meta-test tasks of the source it was trained on, drawn
    by the named protocol, normalizing at prediction as ``normalization`` says (by default as
    exported); ``ways`` and ``shots`` change the tasks' shape."""
    if (ways is not None and ways < 2) or (shots is not None and shots < 1) or episodes < 1:
        raise MetasearchError("--ways takes 2 or more, --shots and --episodes 1 or more")
    protocol = Protocol(protocol_name, episodes, classes_from=classes_from)
    target = resolve_device(device or "auto")
    exported = load_learner(learner_dir, target, _normalization(normalization))
    task = exported.metadata["source"].get("task")
    if not isinstance(task, dict) or not task:
        raise MetasearchError(f"{learner_dir} does not record its task source; cannot sample tasks")
    if ways is not None:
        if exported.learner.task_kind != "classification":
            raise MetasearchError("--ways is for classification; this learner does regression")
        exported.learner_for(ways)  # says why a learner with a head refuses another way
    if shots is not None and exported.learner.task_kind == "regression":
        task = task | {"shots": shots}
    source = build_task_source(task, data_root, target)
    if isinstance(source, ClassificationSource) and (ways or shots):
        source = source.with_episodes(ways, shots, splits=["test"])
    view = protocol.source(source, "test")
    scores = exported.score(
        view, "test", protocol.tasks, protocol.seed, protocol.name, protocol.classes_from
    )
    if not math.isfinite(scores.query_loss):
        raise MetasearchError(
            f"the learner at {learner_dir} gives a non-finite query loss on its meta-test tasks; "
            "export a trial that finished with finite scores"
        )
    line = (
        f"{scores.n_tasks} meta-test tasks: query loss {scores.query_loss:.4g} ± "
        f"{scores.query_loss_ci95:.2g}"
    )
    if scores.accuracy is not None:
        line += f", accuracy {scores.accuracy:.2%} ± {scores.accuracy_ci95:.2%}"
    console = Console()
    console.print(protocol.summary(view), markup=False, highlight=False, soft_wrap=True)
    normalization = f"batch normalization at prediction: {_described(exported)}"
    console.print(normalization, markup=False, highlight=False, soft_wrap=True)
    console.print(line)


def adapt_to_folders(
    learner_dir: Path,
    support: Path,
    query: Path,
    device: str | None,
    normalization: str | None = None,
) -> None:
    """Adapts to SUPPORT/<class>/<image> and labels every image under QUERY, normalizing at
    prediction as ``normalization`` says (by default as exported)."""
    target = resolve_device(device or "auto")
    exported = load_learner(learner_dir, target, _normalization(normalization))
    if exported.learner.task_kind != "classification":
        raise MetasearchError("adapt from image folders needs a classification learner")
    classes = _class_folders(support, "support") if support.is_dir() else []
    ways = exported.learner.n_outputs
    if len(classes) != ways:
        raise DataError(
            f"{support} must hold one folder per class, SUPPORT/<class>/<image>, and this "
            f"learner takes {ways}-way tasks; found {len(classes)} class folders"
        )
    support_paths = [_images_of_class(folder) for folder in classes]
    query_paths = _query_images(query)
    with refusing_bombs():
        support_x = [_load(exported, path) for paths in support_paths for path in paths]
        query_x = [_load(exported, path) for path in query_paths]
    support_y = [label for label, paths in enumerate(support_paths) for _ in paths]
    adapted = exported.adapt(torch.stack(support_x), torch.tensor(support_y))
    predictions = adapted.predict(torch.stack(query_x))
    table = Table("query image", "predicted class", header_style="bold")
    correct = 0
    for path, label in zip(query_paths, predictions.tolist()):
        name = classes[label].name
        table.add_row(escape(str(path.relative_to(query))), escape(name))
        correct += path.parent.name == name
    Console().print(table)
    if all(p.parent != query for p in query_paths):
        Console().print(f"accuracy by the query folders' names: {correct / len(query_paths):.2%}")


def _normalization(given: str | None) -> NormalizationAtPrediction | None:
    if given is not None and given not in NORMALIZATIONS:
        raise MetasearchError(f"--normalization takes {' or '.join(NORMALIZATIONS)}, not {given!r}")
    return given  # type: ignore[return-value]


def _described(exported: ExportedLearner) -> str:
    if not has_batch_norm(exported.learner.network):
        return f"{exported.normalization} (no batch normalization: the same either way)"
    if exported.normalization == "support":
        return "support (the support set's statistics; each query on its own)"
    return "transductive (each query batch's own statistics, as meta-trained)"


def _query_images(query: Path) -> list[Path]:
    if not query.is_dir():
        raise DataError(f"query folder {query} does not exist")
    folders = _class_folders(query, "query")
    paths = image_files(query) + [path for folder in folders for path in _images_of_class(folder)]
    if not paths:
        raise DataError(f"no images under {query}")
    return paths


def _class_folders(folder: Path, what: str) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as error:
        raise DataError(f"cannot list the {what} folder {folder}: {error.strerror}") from None


def _images_of_class(folder: Path) -> list[Path]:
    paths = image_files(folder)
    if not paths:
        raise DataError(
            f"class folder {folder} holds no image ({', '.join(IMAGE_SUFFIXES)}); add some or "
            "remove the folder"
        )
    return paths


def _load(exported: ExportedLearner, path: Path) -> torch.Tensor:
    return read_image(path, exported.transform)
