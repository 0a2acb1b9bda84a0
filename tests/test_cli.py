"""The ``metasearch`` command end to end: search, show, report, export, evaluate, adapt, and the
one-line errors that bad input gets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

import metasearch
from metasearch.cli import app

IMAGE_SIZE = 16


def write_classes(root: Path, n_classes: int, per_class: int, seed: int) -> Path:
    """Classes of noisy copies of one random binary template each: easy to learn from one shot,
    impossible to guess without the support set."""
    rng = np.random.default_rng(seed)
    for c in range(n_classes):
        template = rng.random((IMAGE_SIZE, IMAGE_SIZE)) < 0.5
        folder = root / f"class{seed}_{c:02d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            flips = rng.random(template.shape) < 0.08
            pixels = ((template ^ flips) * 255).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    return root


SPACE: dict[str, Any] = {
    "name": "tiny_conv",
    "fixed": {
        "architecture.family": "conv",
        "architecture.widths": [16, 16],
        "architecture.normalization": "batch",
        "outer.algorithm": "maml",
        "inner.steps": 1,
        "outer.meta_batch_size": 4,
    },
    "dimensions": {
        "inner.lr": {"type": "float", "low": 0.1, "high": 0.4, "log": True},
        "outer.meta_lr": {"type": "float", "low": 3e-3, "high": 1e-2, "log": True},
    },
}


def run(*args: str | Path) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write_study(tmp_path: Path, **fields: Any) -> Path:
    study = {
        "name": "folders",
        "task": {
            "source": "image_folder",
            "root": str(tmp_path / "classes"),
            "ways": 5,
            "shots": 1,
            "query_shots": 3,
            "image_size": IMAGE_SIZE,
            "mode": "L",
        },
        "space": SPACE,
        "sampler": {"name": "tpe", "seed": 0},
        "budget": {"iterations": 80, "eval_tasks": 40},
        "trials": 2,
        "device": "cpu",
    } | fields
    path = tmp_path / "folders.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def assert_one_line_error(result: Any, *expected: str) -> str:
    message = result.output.strip()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in message and len(message.splitlines()) == 1, message
    assert message.startswith("error:"), message
    for words in expected:
        assert words in message, message
    return message


@pytest.mark.slow
def test_search_show_report_export_then_adapt_beats_unadapted(tmp_path: Path) -> None:
    write_classes(tmp_path / "classes", n_classes=40, per_class=6, seed=0)
    study = write_study(tmp_path)
    searched = run("search", study)
    assert searched.exit_code == 0, searched.output
    assert "2 finished trials" in searched.output

    shown = json.loads(run("show", study, "--format", "json").output)
    assert len(shown) == 2 and shown[0]["query_loss"] <= shown[1]["query_loss"]
    assert shown[0]["outer.algorithm"] == "maml"
    assert "query loss" in run("show", study).output

    reported = run("report", study, "--out", tmp_path / "report")
    assert reported.exit_code == 0, reported.output
    html = (tmp_path / "report" / "index.html").read_text()
    assert 'id="figure-history"' in html and 'id="figure-curves"' in html

    exported = run("export", study, "--out", tmp_path / "learner")
    assert exported.exit_code == 0 and "meta-test" in exported.output, exported.output
    assert "on 600 unseen tasks" in exported.output
    assert "protocol unrotated: 600 5-way 1-shot tasks" in exported.output
    metadata = json.loads((tmp_path / "learner" / "learner.json").read_text())
    assert metadata["provenance"]["trial"] == shown[0]["number"]
    assert metadata["scores"]["validation"]["query_loss"] == pytest.approx(shown[0]["query_loss"])
    test = metadata["scores"]["test"]
    assert 0 <= test["accuracy"] <= 1 and test["n_tasks"] == 600
    assert test["protocol"] == {
        "name": "unrotated",
        "tasks": 600,
        "seed": 20170309,
        "ways": 5,
        "shots": 1,
        "rotations": False,
        "classes_from": "any",
    }

    evaluated = run("evaluate", tmp_path / "learner", "--episodes", "20")
    assert evaluated.exit_code == 0 and "20 meta-test tasks" in evaluated.output
    assert "batch normalization at prediction: support" in evaluated.output
    assert "protocol unrotated: 20 5-way 1-shot tasks of classes from the whole split" in (
        evaluated.output
    )
    again = run("evaluate", tmp_path / "learner")  # the default protocol is export's
    assert f"accuracy {test['accuracy']:.2%}" in again.output, again.output
    refused = run("evaluate", tmp_path / "learner", "--ways", "3")
    assert_one_line_error(refused, "maml learner has 5 outputs", "only protonet (no head)")
    vinyals = run("evaluate", tmp_path / "learner", "--protocol", "vinyals")
    assert_one_line_error(vinyals, "the vinyals protocol is Omniglot's")
    assert_one_line_error(run("evaluate", tmp_path / "learner", "--protocol", "x"), "unrotated")
    grouped = run("evaluate", tmp_path / "learner", "--classes-from", "group")
    assert_one_line_error(grouped, "classes_from takes any for image_folder tasks")

    # A new task of classes no split has seen, through the Python API, in a few lines.
    new = write_classes(tmp_path / "new", n_classes=5, per_class=4, seed=1)
    learner = metasearch.load_learner(tmp_path / "learner")
    classes = sorted(new.iterdir())
    images = [[learner.transform(Image.open(p)) for p in sorted(c.iterdir())] for c in classes]
    support_x = torch.stack([imgs[0] for imgs in images])
    query_x = torch.stack([img for imgs in images for img in imgs[1:]])
    query_y = torch.arange(5).repeat_interleave(3)
    adapted = learner.adapt(support_x, torch.arange(5))(query_x)
    inner = learner.learner
    unadapted = inner.forward(inner.params, query_x).detach()
    adapted_loss = inner.loss(adapted, query_y).item()
    unadapted_loss = inner.loss(unadapted, query_y).item()
    assert adapted_loss < 0.6 * unadapted_loss, (adapted_loss, unadapted_loss)
    assert (adapted.argmax(-1) == query_y).float().mean() >= 0.8

    # The same task from folders on the command line.
    support, query = tmp_path / "support", tmp_path / "query"
    for folder in classes:
        (support / folder.name).mkdir(parents=True)
        (query / folder.name).mkdir(parents=True)
        for i, path in enumerate(sorted(folder.iterdir())):
            path.rename((support if i == 0 else query) / folder.name / path.name)
    labelled = run("adapt", tmp_path / "learner", "--support", support, "--query", query)
    assert labelled.exit_code == 0, labelled.output
    accuracy = labelled.output.split("accuracy by the query folders' names:")[1]
    assert float(accuracy.split("%")[0]) >= 80


def test_a_malformed_study_file_names_the_field(tmp_path: Path) -> None:
    study = write_study(tmp_path, sampler={"name": "annealing"})
    message = assert_one_line_error(run("search", study), "sampler.name")
    assert "tpe" in message and "random" in message

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert_one_line_error(run("search", broken), "broken.yaml")


def test_an_unknown_algorithm_is_refused(tmp_path: Path) -> None:
    space = {**SPACE, "fixed": {**SPACE["fixed"], "outer.algorithm": "mamlx"}}
    message = assert_one_line_error(run("search", write_study(tmp_path, space=space)), "mamlx")
    assert "maml" in message.replace("mamlx", "")


def test_missing_data_says_how_to_get_it(tmp_path: Path) -> None:
    study = write_study(tmp_path)  # no class folders were written
    assert_one_line_error(run("search", study), "classes")
    omniglot = write_study(tmp_path, task={"source": "omniglot"})
    message = assert_one_line_error(
        run("search", omniglot, "--data-root", tmp_path / "empty"), "Omniglot"
    )
    assert "METASEARCH_DATA" in message or "--data-root" in message


def test_show_before_search_and_an_unreachable_storage(tmp_path: Path) -> None:
    write_classes(tmp_path / "classes", n_classes=40, per_class=4, seed=0)
    study = write_study(tmp_path)
    assert_one_line_error(run("show", study), "metasearch search")
    url = "postgresql+psycopg://metasearch:s3cret@127.0.0.1:9/studies"
    message = assert_one_line_error(run("search", study, "--storage", url), "cannot reach")
    assert "s3cret" not in message and "127.0.0.1:9" in message


def test_a_corrupt_or_truncated_artifact_is_refused(tmp_path: Path) -> None:
    from metasearch.learners import build_learner
    from metasearch.spec import LearnerSpec

    spec = LearnerSpec.from_dict({"architecture": {"family": "mlp", "widths": [8]}})
    learner = build_learner(spec, (1,), 1, "regression", 0, "cpu")
    out = metasearch.export_learner(learner, tmp_path / "learner", input_shape=(1,))
    weights = out / "weights.safetensors"
    content = weights.read_bytes()
    weights.write_bytes(content[: len(content) // 2])
    assert_one_line_error(run("evaluate", out), "weights.safetensors")
    weights.write_bytes(content[:-4] + b"\x00\x00\x00\x00")
    assert_one_line_error(run("evaluate", out), "checksum")
    (out / "learner.json").write_text("{not json")
    assert_one_line_error(run("evaluate", out), "learner.json")


@pytest.mark.slow
def test_refused_commands_leave_the_stored_study_untouched(tmp_path: Path) -> None:
    write_classes(tmp_path / "classes", n_classes=40, per_class=4, seed=0)
    budget = {"iterations": 10, "eval_tasks": 10}
    study = write_study(tmp_path, budget=budget)
    assert run("search", study).exit_code == 0
    before = run("show", study, "--format", "json").output

    searched = {k: v for k, v in SPACE["fixed"].items() if k != "inner.steps"}
    steps = {"inner.steps": {"type": "int", "low": 1, "high": 3}}
    wider = {**SPACE, "fixed": searched, "dimensions": SPACE["dimensions"] | steps}
    changed = write_study(tmp_path, budget=budget, space=wider)
    assert_one_line_error(run("search", changed), "different search space")
    unknown = {**SPACE, "fixed": SPACE["fixed"] | {"outer.algorithm": "mamlx"}}
    assert_one_line_error(run("search", write_study(tmp_path, space=unknown)), "mamlx")
    study = write_study(tmp_path, budget=budget)
    exported = run("export", study, "--trial", "7", "--out", tmp_path / "learner")
    assert_one_line_error(exported, "no trial 7")
    assert run("show", study, "--format", "json").output == before


@pytest.mark.data
def test_a_5way_protonet_evaluates_at_20_ways_and_by_the_vinyals_protocol(
    tmp_path: Path, data_root: Path
) -> None:
    from metasearch.learners import build_learner
    from metasearch.spec import LearnerSpec
    from metasearch.tasks import omniglot

    source = omniglot(data_root, ways=5, shots=1, query_shots=5)
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"widths": [16, 16]},
            "inner": {"steps": 0},
            "outer": {"algorithm": "protonet"},
        }
    )
    learner = build_learner(spec, source.input_shape, 5, "classification", 0, "cpu")
    task = {"source": "omniglot", "ways": 5, "shots": 1, "query_shots": 5}
    out = metasearch.export_learner(
        learner,
        tmp_path / "protonet",
        input_shape=source.input_shape,
        source_description={**source.describe(), "task": task},
        input_transform=source.input_transform(),
    )
    common = ("--episodes", "40", "--data-root", data_root, "--device", "cpu")
    wide = run("evaluate", out, "--ways", "20", *common)
    assert wide.exit_code == 0, wide.output
    assert "protocol unrotated: 40 20-way 1-shot tasks" in wide.output
    accuracy = float(wide.output.split("accuracy ")[1].split("%")[0])
    assert accuracy > 15, wide.output  # chance is 5%: random features already tell apart
    vinyals = run("evaluate", out, "--protocol", "vinyals", *common)
    assert vinyals.exit_code == 0, vinyals.output
    assert "protocol vinyals (Vinyals et al., 2016, as papers report)" in vinyals.output
    assert "rotated into 4 classes" in vinyals.output
    within = run("evaluate", out, "--classes-from", "alphabet", *common)
    assert within.exit_code == 0, within.output
    assert "tasks of classes from one alphabet, none rotated" in within.output
