"""The ``README.md`` of an exported folder: a model card (Mitchell et al., 2019) for whoever is
handed the folder, made from the same metadata as ``learner.json`` and never edited by hand."""

from __future__ import annotations

import json
from typing import Any

SCORE_ROWS = (("query_loss", "{:.4g}", "{:.2g}"), ("accuracy", "{:.2%}", "{:.2%}"))
"""Each score's key and the formats of its value and of its confidence half-width."""


def model_card(metadata: dict[str, Any]) -> str:
    """The model card of the exported learner ``metadata`` describes (a whole ``learner.json``)."""
    provenance = metadata.get("provenance", {})
    spec = metadata["spec"]
    outer, architecture = spec.get("outer", {}), spec.get("architecture", {})
    title = f"{outer.get('algorithm', 'meta-learned')} {architecture.get('family', '')} learner"
    sections = [
        f"# {_task(metadata)}: {title}",
        "Exported by metasearch. Made from `learner.json`, which holds the same facts with "
        "checksums; `weights.safetensors` holds the tensors.",
        _searched(provenance),
        _scores(metadata.get("scores", {}), metadata.get("normalization_at_prediction")),
        _training(provenance.get("training") or {}),
        _use(metadata),
        "## Spec\n\n```json\n" + json.dumps(spec, indent=2) + "\n```",
        _versions(provenance, metadata),
    ]
    return "\n\n".join(sections) + "\n"


def _task(metadata: dict[str, Any]) -> str:
    task = metadata.get("source", {}).get("task") or {}
    name = task.get("source", metadata.get("task_kind", "learner"))
    if metadata.get("task_kind") == "classification" and "shots" in task:
        return f"{name} {metadata['n_outputs']}-way {task['shots']}-shot"
    return str(name)


def _searched(provenance: dict[str, Any]) -> str:
    lines = ["## What was searched", ""]
    study = provenance.get("study")
    lines.append(f"- study: {study}" if study else "- exported from Python, not from a study")
    search = provenance.get("search") or {}
    if search:
        dimensions = ", ".join(f"`{d}`" for d in search.get("dimensions", [])) or "none"
        lines.append(f"- space: {search.get('space')} (sampled: {dimensions})")
        lines.append(f"- trials: {search.get('trials')}, strategy {search.get('strategy')}")
    for key, what in (("trial", "winning trial"), ("seed", "seed configuration")):
        if key in provenance:
            lines.append(f"- {what}: {provenance[key]}")
    if provenance.get("retrained"):
        lines.append("- meta-trained again with the budget below, after the search")
    if "lr_schedule_replaced" in provenance:
        lines.append(
            f"- meta learning-rate schedule replaced for that (it was "
            f"{provenance['lr_schedule_replaced']}; the spec holds the one it trained with)"
        )
    return "\n".join(lines)


def _scores(scores: dict[str, Any], normalization: str | None) -> str:
    lines = ["## Scores", "", "| split | query loss | accuracy | tasks | protocol |"]
    lines.append("|---|---|---|---|---|")
    for split in ("test", "validation"):
        found = scores.get(split) or {}
        if not found:
            continue
        cells = [_with_ci(found, key, form, ci_form) for key, form, ci_form in SCORE_ROWS]
        protocol = found.get("protocol") or {}
        lines.append(
            f"| {split} | {' | '.join(cells)} | {found.get('n_tasks', '')} | "
            f"{_protocol(protocol, found.get('normalization_at_prediction'))} |"
        )
    lines += [
        "",
        "± is a 95% confidence half-width over tasks (1.96 standard errors). Test tasks are of "
        "classes the search never saw; validation scores are those the search ranked by.",
    ]
    if normalization:
        lines += [
            "",
            f"This folder predicts with `normalization_at_prediction: {normalization}` by "
            "default: " + _NORMALIZATION[normalization],
        ]
    return "\n".join(lines)


_NORMALIZATION = {
    "support": "batch normalization uses the support set's statistics, so a query's prediction "
    "does not depend on the queries passed with it (one image at a time is fine).",
    "transductive": "batch normalization uses each query batch's own statistics, as in "
    "meta-training, so pass a task's queries together, never one image at a time.",
}


def _with_ci(found: dict[str, Any], key: str, form: str, ci_form: str) -> str:
    value, ci = found.get(key), found.get(f"{key}_ci95")
    if value is None:
        return "-"
    return form.format(value) + ("" if ci is None else " ± " + ci_form.format(ci))


def _protocol(protocol: dict[str, Any], normalization: str | None) -> str:
    parts = [str(protocol["name"])] if "name" in protocol else []
    if "ways" in protocol:
        parts.append(f"{protocol['ways']}-way {protocol['shots']}-shot")
        parts.append("rotated" if protocol.get("rotations") else "upright")
        classes = protocol.get("classes_from")
        parts.append("classes from the whole split" if classes == "any" else f"classes {classes}")
    if "seed" in protocol:
        parts.append(f"seed {protocol['seed']}")
    if normalization:
        parts.append(f"{normalization} normalization")
    return ", ".join(parts) or "-"


def _training(training: dict[str, Any]) -> str:
    lines = ["## Training", ""]
    facts = (
        ("iterations", "meta-iterations trained", "{}"),
        ("examples", "examples seen", "{:,.0f}"),
        ("meta_train_seconds", "seconds of meta-training", "{:.1f}"),
        ("scoring_seconds", "seconds of scoring besides", "{:.1f}"),
        ("budget", "budget", "{}"),
        ("resumed_from", "resumed from iteration", "{}"),
    )
    lines += [
        f"- {what}: {form.format(training[key])}"
        for key, what, form in facts
        if training.get(key) is not None
    ]
    return "\n".join(lines if len(lines) > 2 else [*lines, "- not recorded"])


def _use(metadata: dict[str, Any]) -> str:
    ways = metadata.get("n_outputs")
    shape = metadata.get("input_shape")
    lines = [
        "## Use",
        "",
        "```python",
        "import torch",
        "from metasearch import load_learner  # or ExportedLearner.from_pretrained",
        "",
        'learner = load_learner("path/to/this/folder")  # normalization="support" or '
        '"transductive" to choose',
    ]
    if metadata.get("task_kind") == "classification":
        lines += [
            "# learner.transform takes a PIL image, an image path, an array or a tensor",
            "support_x = torch.stack([learner.transform(image) for image in support_images])",
            f"support_y = torch.tensor(labels)  # 0..{ways - 1 if ways else 'ways-1'}",
            "adapted = learner.adapt(support_x, support_y)",
            "classes = adapted.predict(torch.stack([learner.transform(q) for q in queries]))",
            "```",
            "",
            f"Inputs are {shape} tensors. From the command line, with one folder of images per "
            "class under `support/`, and the images to label under `query/`:",
            "",
            "```",
            "metasearch adapt path/to/this/folder --support support/ --query query/",
            "metasearch evaluate path/to/this/folder --episodes 600",
            "```",
        ]
    else:
        lines += [
            "adapted = learner.adapt(support_x, support_y)  # targets [S, 1]",
            "values = adapted(query_x)",
            "```",
            "",
            f"Inputs are {shape} tensors.",
        ]
    return "\n".join(lines)


def _versions(provenance: dict[str, Any], metadata: dict[str, Any]) -> str:
    lines = ["## Versions", ""]
    for key, what in (
        ("metasearch_version", "metasearch"),
        ("torch_version", "torch"),
        ("optuna_version", "optuna"),
        ("python_version", "Python"),
    ):
        if provenance.get(key):
            lines.append(f"- {what} {provenance[key]}")
    lines.append(f"- format {metadata.get('format')} version {metadata.get('format_version')}")
    if provenance.get("created_utc"):
        lines.append(f"- exported {provenance['created_utc']}")
    return "\n".join(lines)
