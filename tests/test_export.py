"""Exported learners: exact round trips, real adaptation after loading, and clear errors."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metasearch import Budget, LearnerSpec, MetasearchError, SinusoidSource, evaluate
from metasearch.algorithms import get_algorithm
from metasearch.commands.exporting import VALIDATION_KEYS
from metasearch.engines import predict_tasks
from metasearch.errors import DataError, InputError
from metasearch.evaluation import Scores, held_out_tasks, score
from metasearch.evaluation.scoring import DEFAULT_EVAL_SEED
from metasearch.export import (
    AdaptedLearner,
    ArtifactError,
    ExportedLearner,
    export_learner,
    load_learner,
)
from metasearch.export.artifact import FORMAT_VERSION, metadata_checksum
from metasearch.export.card import model_card
from metasearch.learners import Learner, build_learner
from metasearch.tasks import ClassificationSource, TaskSource
from metasearch.tasks.images import load_image

WAYS = 3
ALGORITHM_SPECS = {
    "maml": {"outer": {"algorithm": "maml"}},
    "metasgd": {
        "inner": {"granularity": "per_parameter", "learned": True},
        "outer": {"algorithm": "metasgd"},
    },
    "mamlpp": {
        "inner": {"steps": 2, "granularity": "per_layer_per_step", "learned": True},
        "outer": {"algorithm": "mamlpp"},
    },
    "anil": {"outer": {"algorithm": "anil"}},
    "protonet": {"inner": {"steps": 0}, "outer": {"algorithm": "protonet"}},
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from threads, and spinning OpenMP threads crawl on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_images(ways: int = WAYS) -> ClassificationSource:
    """12 classes of random 8x8 grey images: 6 for training, 3 each for val and test."""
    images = torch.randint(0, 256, (12 * 5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    return ClassificationSource(
        images.to(torch.uint8),
        torch.arange(12) * 5,
        torch.full((12,), 5),
        {"train": range(6), "val": range(6, 9), "test": range(9, 12)},
        ways=ways,
        shots=2,
        query_shots=3,
        name="tiny",
        details={"invert": True},
    )


def conv_learner(algorithm: str) -> Learner:
    """A learner unlike a fresh build: other seed, and learned rates moved off ``inner.lr``."""
    spec = LearnerSpec.from_dict(
        {"architecture": {"widths": [4, 4]}, "inner": {"lr": 0.3}, **ALGORITHM_SPECS[algorithm]}
    )
    learner = build_learner(spec, (1, 8, 8), WAYS, "classification", seed=1)
    if spec.inner.learned:
        with torch.no_grad():
            for rate in learner.meta_state.values():
                rate.mul_(0.5 + torch.rand_like(rate))
    return learner


def export(learner: Learner, source: TaskSource, out_dir: Path) -> Path:
    return export_learner(
        learner,
        out_dir,
        input_shape=source.input_shape,
        source_description=source.describe(),
        input_transform=source.input_transform(),
        scores={"val": {"query_loss": 0.5}},
        provenance={"study": "unit", "trial": 3},
    )


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    return export(conv_learner("metasgd"), tiny_images(), tmp_path / "learner")


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(ALGORITHM_SPECS))
def test_round_trip_gives_identical_predictions(algorithm: str, tmp_path: Path) -> None:
    source, learner = tiny_images(), conv_learner(algorithm)
    loaded = load_learner(export(learner, source, tmp_path / "out"), normalization="transductive")
    assert isinstance(loaded, ExportedLearner) and loaded.spec == learner.spec
    original = learner.state_tensors()
    restored = loaded.learner.state_tensors()
    assert all(torch.equal(original[n], restored[n]) for n in original)
    fresh = build_learner(learner.spec, (1, 8, 8), WAYS, "classification")  # seed 0
    assert not torch.equal(fresh.params["body.0.weight"], restored["param.body.0.weight"])

    alg = get_algorithm(algorithm)
    params = {n: p.detach() for n, p in learner.params.items()}
    tasks = held_out_tasks(source, "test", 4, 0)
    batched = predict_tasks(alg, learner, tasks)  # the evaluator's path
    for i in range(tasks.n_tasks):
        sx, sy, qx = tasks.support_x[i], tasks.support_y[i], tasks.query_x[i]
        adapted = loaded.adapt(sx, sy)  # runs under no_grad
        assert isinstance(adapted, AdaptedLearner)
        expected = alg.predict(
            learner, params, alg.adapt(learner, params, learner.meta_state, sx, sy, True), qx
        )
        outputs = adapted(qx)
        assert outputs.shape == (WAYS * 3, WAYS) and torch.equal(outputs, expected)
        torch.testing.assert_close(outputs, batched[i])
        assert torch.equal(adapted.predict(qx), expected.argmax(-1))
        if algorithm != "protonet":  # adaptation changed the outputs, despite no_grad
            assert not torch.allclose(outputs, learner.forward(params, qx))
    assert loaded.score(source, "test", 4, 0).query_loss == score(alg, learner, tasks).query_loss


def test_learned_per_parameter_rates_survive(artifact: Path) -> None:
    rate = load_learner(artifact).learner.meta_state["inner_lr.body.0.weight"]
    assert rate.shape == (1, 4, 1, 3, 3)
    assert not torch.allclose(rate, torch.full_like(rate, 0.3))


def test_metadata_records_what_was_exported(artifact: Path) -> None:
    metadata = load_learner(artifact).metadata
    assert metadata["format"] == "metasearch-learner" and metadata["format_version"] == 3
    assert metadata["metadata_sha256"] == metadata_checksum(metadata)
    assert metadata["task_kind"] == "classification" and metadata["n_outputs"] == WAYS
    assert metadata["input_shape"] == [1, 8, 8]
    assert metadata["input_transform"] == {
        "size": [8, 8],
        "mode": "L",
        "invert": True,
        "scale": "divide by 255",
    }
    assert metadata["source"]["source"] == "tiny" and metadata["scores"]["val"]["query_loss"] == 0.5
    provenance = metadata["provenance"]
    assert provenance["study"] == "unit" and provenance["trial"] == 3
    assert {"metasearch_version", "torch_version", "optuna_version", "python_version"} <= (
        provenance.keys()
    )
    assert provenance["created_utc"].endswith("+00:00")
    assert re.fullmatch(r"[0-9a-f]{64}", metadata["weights"]["sha256"])
    assert metadata["weights"]["tensors"]["param.body.0.weight"] == [4, 1, 3, 3]
    assert metadata["normalization_at_prediction"] == "support"
    names = ["README.md", "learner.json", "weights.safetensors"]
    assert sorted(p.name for p in artifact.iterdir()) == names


@pytest.mark.slow
def test_loaded_maml_adapts_to_new_sinusoids(tmp_path: Path) -> None:
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"family": "mlp", "widths": [40, 40], "normalization": "none"},
            "init": {"scheme": "xavier"},
            "inner": {"steps": 2, "lr": 0.01},
            "outer": {"meta_lr": 1e-2, "meta_batch_size": 10, "iterations": 400},
        }
    )
    source = SinusoidSource(shots=10, query_points=10)
    result = evaluate(spec, source, Budget(eval_tasks=2))
    loaded = load_learner(export(result.learner, source, tmp_path / "sinusoid"))
    assert loaded.transform(0.5).shape == (1,)
    tasks = held_out_tasks(source, "test", 20, seed=123)  # tasks it never met
    adapted_losses, unadapted_losses = [], []
    for sx, sy, qx, qy in zip(*tasks):
        adapted = loaded.adapt(sx, sy)
        adapted_losses.append(((adapted(qx) - qy) ** 2).mean().item())
        with torch.no_grad():
            unadapted = loaded.learner.forward(loaded.learner.params, qx)
        unadapted_losses.append(((unadapted - qy) ** 2).mean().item())
    adapted_mean, unadapted_mean = np.mean(adapted_losses), np.mean(unadapted_losses)
    assert adapted_mean < 0.5 * unadapted_mean, (adapted_mean, unadapted_mean)
    wins = sum(a < u for a, u in zip(adapted_losses, unadapted_losses))
    assert wins >= 16, (adapted_losses, unadapted_losses)


def test_image_transform_resizes_inverts_and_scales(tmp_path: Path) -> None:
    width, height = 40, 30
    gradient = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))
    image = Image.fromarray(np.stack([gradient, gradient[::-1], gradient], axis=-1), "RGB")
    learner = build_learner(conv_learner("maml").spec, (1, 12, 20), WAYS, "classification")
    description = {"size": [12, 20], "mode": "L", "invert": True, "scale": "divide by 255"}
    plain = {**description, "invert": False}
    loaded = {}
    for name, transform in (("inverted", description), ("plain", plain)):
        loaded[name] = load_learner(
            export_learner(
                learner,
                tmp_path / name,
                input_shape=(1, 12, 20),
                source_description={},
                input_transform=transform,
                scores={},
            )
        ).transform
    inverted, straight = loaded["inverted"](image), loaded["plain"](image)
    assert inverted.shape == (1, 12, 20) and inverted.dtype == torch.float32  # [C, H, W]
    assert inverted.min() >= 0 and inverted.max() <= 1 and inverted.std() > 0.1
    torch.testing.assert_close(inverted, 1 - straight)
    white = Image.new("L", (5, 7), 255)
    assert torch.equal(loaded["inverted"](white), torch.zeros(1, 12, 20))
    image.save(tmp_path / "image.png")  # the same pixels the training data pipeline gives
    pipeline = load_image(tmp_path / "image.png", (12, 20), "L", invert=True)
    assert torch.equal(inverted, torch.from_numpy(pipeline).float() / 255)


def test_transform_rgb_and_bad_descriptions(tmp_path: Path) -> None:
    learner = build_learner(conv_learner("maml").spec, (3, 6, 6), WAYS, "classification")
    rgb = {"size": [6, 6], "mode": "RGB", "invert": False, "scale": "divide by 255"}

    def export_with(transform: dict) -> Path:
        return export_learner(
            learner,
            tmp_path / "rgb",
            input_shape=(3, 6, 6),
            source_description={},
            input_transform=transform,
            scores={},
        )

    image = Image.new("RGB", (9, 9), (255, 0, 51))
    pixel = load_learner(export_with(rgb)).transform(image)[:, 0, 0]
    torch.testing.assert_close(pixel, torch.tensor([1.0, 0.0, 0.2]))
    with pytest.raises(ValueError, match="makes tensors of shape \\[1, 6, 6\\]"):
        export_with({**rgb, "mode": "L"})
    with pytest.raises(ValueError, match="input transform: scale"):
        export_with({**rgb, "scale": "standardize"})


def test_export_rejects_an_input_shape_the_network_cannot_take(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="input_shape \\[1, 16, 16\\] does not fit"):
        export_learner(
            conv_learner("maml"),
            tmp_path / "x",
            input_shape=(1, 16, 16),
            source_description={},
            input_transform={},
            scores={},
        )
    assert not (tmp_path / "x").exists()


def test_a_crash_while_writing_never_leaves_a_complete_looking_artifact(
    artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metasearch.export.artifact as artifact_module

    real_replace = artifact_module.os.replace

    def crash_on_metadata(source: str, target: Path) -> None:
        if Path(target).name == "learner.json":
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(artifact_module.os, "replace", crash_on_metadata)
    with pytest.raises(KeyboardInterrupt):  # re-export over the earlier one, crashing midway
        export(conv_learner("maml"), tiny_images(), artifact)
    assert sorted(p.name for p in artifact.iterdir()) == ["README.md", "weights.safetensors"]
    with pytest.raises(ArtifactError, match="holds no learner.json.*did not finish"):
        load_learner(artifact)


def edit_metadata(artifact: Path, edit, sign: bool = True) -> None:
    """Edits learner.json; ``sign`` recomputes its checksum, as a deliberate edit would."""
    path = artifact / "learner.json"
    metadata = json.loads(path.read_text())
    edit(metadata)
    if sign:
        metadata["metadata_sha256"] = metadata_checksum(metadata)
    path.write_text(json.dumps(metadata))


def set_version(version):
    return lambda m: m.update(format_version=version)


def rewrite_weights(artifact: Path, data: bytes) -> None:
    import hashlib

    (artifact / "weights.safetensors").write_bytes(data)
    edit_metadata(artifact, lambda m: m["weights"].update(sha256=hashlib.sha256(data).hexdigest()))


def nan_weights(artifact: Path) -> bytes:
    from safetensors.torch import load, save

    tensors = load((artifact / "weights.safetensors").read_bytes())
    return save({name: torch.full_like(t, float("nan")) for name, t in tensors.items()})


def flip_one_byte(artifact: Path) -> None:
    path = artifact / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(artifact: Path) -> None:
    path = artifact / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def narrow_the_spec(metadata: dict) -> None:
    metadata["spec"]["architecture"]["widths"] = [4, 5]


CHECKSUM = (
    "weights.safetensors does not match its checksum in learner.json: the file is corrupt or was "
    "modified; export the learner again"
)
BROKEN = {
    "tampered byte": (flip_one_byte, CHECKSUM),
    "truncated": (truncate, CHECKSUM),
    "newer version": (
        lambda a: edit_metadata(a, set_version(FORMAT_VERSION + 1)),
        f"format version {FORMAT_VERSION + 1}, exported by an incompatible metasearch version "
        "0.1.0; re-export it with this version",
    ),
    "older version": (
        lambda a: edit_metadata(a, set_version(1)),
        "format version 1, exported by an incompatible metasearch version",
    ),
    "metadata edited": (
        lambda a: edit_metadata(a, lambda m: m["spec"]["inner"].update(lr=50.0), sign=False),
        "learner.json does not match its checksum \\(metadata_sha256\\): the file is corrupt or "
        "was modified; export the learner again",
    ),
    "non-finite weights": (
        lambda a: rewrite_weights(a, nan_weights(a)),
        "is intact but 20 tensors hold NaN or infinite values \\(first inner_lr.body.0.bias\\): "
        "the learner diverged",
    ),
    "missing weights": (
        lambda a: (a / "weights.safetensors").unlink(),
        "weights.safetensors is missing; export the learner again",
    ),
    "missing metadata": (lambda a: (a / "learner.json").unlink(), "holds no learner.json"),
    "missing directory": (shutil.rmtree, "no exported learner at"),
    "garbage json": (
        lambda a: (a / "learner.json").write_bytes(b"\x00{not json"),
        "learner.json is not valid JSON",
    ),
    "wrong format": (
        lambda a: edit_metadata(a, lambda m: m.update(format="pytorch")),
        "not an exported metasearch learner \\(format 'pytorch'",
    ),
    "unparseable weights": (
        lambda a: rewrite_weights(a, b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage"),
        "cannot be read as safetensors",
    ),
    "tensor list edited": (
        lambda a: edit_metadata(a, lambda m: m["weights"]["tensors"].pop("param.head.bias")),
        "differs from the tensors learner.json lists: unexpected tensors \\['param.head.bias'\\];",
    ),
    "spec edited": (
        lambda a: edit_metadata(a, narrow_the_spec),
        "does not fit the learner learner.json describes: param.body.4.weight has shape "
        "\\[4, 4, 3, 3\\], expected \\[5, 4, 3, 3\\]; .* and 8 more; export the learner again",
    ),
    "invalid spec": (
        lambda a: edit_metadata(a, lambda m: m["spec"]["outer"].update(algorithm="magic")),
        "invalid learner spec: outer.algorithm",
    ),
    "field missing": (
        lambda a: edit_metadata(a, lambda m: m.pop("n_outputs")),
        "n_outputs: Field required; export the learner again",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_artifacts_raise_one_clear_line(case: str, artifact: Path) -> None:
    load_learner(artifact)  # intact before the damage
    damage, message = BROKEN[case]
    damage(artifact)
    with pytest.raises(ArtifactError, match=message) as caught:
        load_learner(artifact)
    assert isinstance(caught.value, MetasearchError) and "\n" not in str(caught.value)


def test_adapt_rejects_bad_support_sets(tmp_path: Path) -> None:
    source = tiny_images()
    tasks = held_out_tasks(source, "test", 1, 0)
    sx, sy = tasks.support_x[0], tasks.support_y[0]
    loaded = load_learner(export(conv_learner("protonet"), source, tmp_path / "p"))
    with pytest.raises(ValueError, match="every class; missing \\[0\\]"):
        loaded.adapt(sx, sy + 1)  # protonet takes any number of classes, numbered from 0
    with pytest.raises(ValueError, match="integer class labels"):
        loaded.adapt(sx, sy.float())
    with pytest.raises(ValueError, match="support_x must be a batch \\[N, 1, 8, 8\\]"):
        loaded.adapt(sx[:, :, :4], sy)
    with pytest.raises(ValueError, match="every class; missing \\[1\\]"):
        loaded.adapt(sx, torch.where(sy == 1, 2, sy))
    adapted = loaded.adapt(sx.double(), sy.int())  # other dtypes are converted
    with pytest.raises(ValueError, match="query_x must be a batch"):
        adapted(sx[0])
    with pytest.raises(DataError, match="does not fit this learner"):
        loaded.score(SinusoidSource(), n_tasks=2)


def test_protonet_takes_tasks_of_any_way_and_gradient_learners_refuse_them(
    tmp_path: Path,
) -> None:
    source = tiny_images()
    protonet = load_learner(  # the reference below normalizes each batch by itself
        export(conv_learner("protonet"), source, tmp_path / "protonet"),
        normalization="transductive",
    )
    maml = load_learner(export(conv_learner("maml"), source, tmp_path / "maml"))
    assert protonet.any_ways and not maml.any_ways
    params = {n: p.detach() for n, p in protonet.learner.params.items()}

    def nearest_prototype(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor) -> torch.Tensor:
        support, query = (protonet.learner.features(params, x) for x in (sx, qx))
        prototypes = torch.stack([support[sy == c].mean(0) for c in range(int(sy.max()) + 1)])
        return torch.cdist(query, prototypes).argmin(-1)

    wide = held_out_tasks(
        source.with_episodes(ways=6, splits=["train"]), "train", 3, 0
    )  # all 6 training classes
    for sx, sy, qx in zip(wide.support_x, wide.support_y, wide.query_x):
        adapted = protonet.adapt(sx, sy)
        assert adapted(qx).shape == (6 * 3, 6)
        assert torch.equal(adapted.predict(qx), nearest_prototype(sx, sy, qx))

    narrow = source.with_episodes(ways=2)
    scores = protonet.score(narrow, n_tasks=40)
    tasks = held_out_tasks(narrow, "test", 40, DEFAULT_EVAL_SEED)
    correct = [
        (nearest_prototype(sx, sy, qx) == qy).double().mean() for sx, sy, qx, qy in zip(*tasks)
    ]
    assert scores.n_tasks == 40
    assert scores.accuracy == pytest.approx(torch.stack(correct).mean().item(), abs=1e-9)
    with pytest.raises(DataError, match="maml learner has 3 outputs.* cannot take 2-way tasks"):
        maml.score(narrow, n_tasks=4)
    assert maml.score(source, n_tasks=4).n_tasks == 4


def test_export_package_never_unpickles() -> None:
    package = Path(__file__).parents[1] / "metasearch" / "export"
    pattern = re.compile(r"\bimport pickle|\bpickle\.|(?<![\w.])torch\.(load|save)\b|allow_pickle")
    for path in package.glob("*.py"):
        assert not pattern.search(path.read_text()), path


def test_exported_files_are_readable_by_others_whatever_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        folder = export(conv_learner("maml"), tiny_images(), tmp_path / "handed-on")
        export(conv_learner("maml"), tiny_images(), folder)  # again, over the first
    finally:
        os.umask(previous)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {"README.md": 0o644, "learner.json": 0o644, "weights.safetensors": 0o644}


def test_the_model_card_is_made_from_the_metadata(tmp_path: Path) -> None:
    source = tiny_images()
    folder = export_learner(
        conv_learner("maml"),
        tmp_path / "card",
        input_shape=source.input_shape,
        source_description={**source.describe(), "task": {"source": "tiny", "shots": 2}},
        input_transform=source.input_transform(),
        scores={
            "validation": {"query_loss": 0.75, "query_loss_ci95": 0.05, "accuracy": 0.625},
            "test": {
                "query_loss": 0.8125,
                "query_loss_ci95": 0.0625,
                "accuracy": 0.59375,
                "accuracy_ci95": 0.03125,
                "n_tasks": 600,
                "protocol": {"name": "unrotated", "ways": 3, "shots": 2, "seed": 7},
                "normalization_at_prediction": "support",
            },
        },
        provenance={
            "study": "unit",
            "trial": 3,
            "search": {"space": "tiny", "dimensions": ["inner.lr"], "trials": 9},
            "training": {"iterations": 120, "meta_train_seconds": 41.25},
        },
    )
    card = (folder / "README.md").read_text()
    loaded = load_learner(folder)
    assert card == model_card(loaded.metadata)  # nothing in it but what learner.json holds
    spec_block = card.split("```json\n")[1].split("```")[0]
    assert json.loads(spec_block) == loaded.metadata["spec"]
    assert "# tiny 3-way 2-shot: maml conv learner" in card
    assert "study: unit" in card and "winning trial: 3" in card and "`inner.lr`" in card
    assert "| test | 0.8125 ± 0.062 | 59.38% ± 3.12% | 600 | unrotated, 3-way 2-shot" in card
    assert "support normalization" in card and "| validation | 0.75 ± 0.05 | 62.50% |" in card
    assert "meta-iterations trained: 120" in card and "seconds of meta-training: 41.2" in card
    assert "load_learner(" in card and "metasearch adapt path/to/this/folder" in card
    provenance = loaded.metadata["provenance"]
    for package in ("metasearch", "torch", "optuna"):
        assert f"- {package} {provenance[f'{package}_version']}" in card


def test_test_and_validation_scores_have_the_same_names() -> None:
    names = {"query_loss", "query_loss_ci95", "accuracy", "accuracy_ci95"}
    assert set(VALIDATION_KEYS) == names
    assert names <= {field.name for field in dataclasses.fields(Scores)}
    assert "loss" not in {field.name for field in dataclasses.fields(Scores)}


def as_format_2(folder: Path) -> None:
    """Rewrites an export as metasearch wrote it before format version 3."""

    def downgrade(metadata: dict) -> None:
        metadata["format_version"] = 2
        del metadata["normalization_at_prediction"]
        metadata["scores"]["test"] = {"loss": 0.5, "loss_ci95": 0.25, "accuracy": 0.75}
        del metadata["provenance"]["optuna_version"]

    edit_metadata(folder, downgrade)
    (folder / "README.md").unlink()


def test_format_2_folders_still_load_transductive_with_scores_renamed(artifact: Path) -> None:
    as_format_2(artifact)
    loaded = load_learner(artifact)
    assert loaded.normalization == "transductive"  # as those learners predicted
    assert loaded.metadata["scores"]["test"] == {
        "query_loss": 0.5,
        "query_loss_ci95": 0.25,
        "accuracy": 0.75,
    }
    assert "meta-test query loss 0.5" in repr(loaded)
    assert load_learner(artifact, normalization="support").normalization == "support"
    saved = load_learner(loaded.save(artifact.parent / "upgraded"))
    assert saved.metadata["format_version"] == FORMAT_VERSION
    assert saved.metadata["scores"]["test"]["query_loss"] == 0.5
    assert saved.normalization == "transductive"


def test_save_and_from_pretrained_round_trip(artifact: Path, tmp_path: Path) -> None:
    loaded = ExportedLearner.from_pretrained(artifact)
    again = ExportedLearner.from_pretrained(loaded.save(tmp_path / "copy"))
    before, after = loaded.learner.state_tensors(), again.learner.state_tensors()
    assert before.keys() == after.keys() and all(torch.equal(before[n], after[n]) for n in before)
    for key in ("spec", "source", "scores", "input_transform", "normalization_at_prediction"):
        assert again.metadata[key] == loaded.metadata[key]
    assert again.metadata["provenance"]["trial"] == 3
    assert (tmp_path / "copy" / "README.md").is_file()
    tasks = held_out_tasks(tiny_images(), "test", 1, 0)
    sx, sy, qx = tasks.support_x[0], tasks.support_y[0], tasks.query_x[0]
    assert torch.equal(loaded.adapt(sx, sy)(qx), again.adapt(sx, sy)(qx))
    assert load_learner(artifact).metadata == loaded.metadata
    with pytest.raises(ValueError, match="normalization must be one of transductive, support"):
        ExportedLearner.from_pretrained(artifact, normalization="running")


@pytest.mark.parametrize("algorithm", ["maml", "protonet"])
def test_support_normalization_predicts_one_image_as_in_a_batch(
    algorithm: str, tmp_path: Path
) -> None:
    source = tiny_images()
    folder = export(conv_learner(algorithm), source, tmp_path / algorithm)
    tasks = held_out_tasks(source, "test", 2, 0)
    support, transductive = load_learner(folder), load_learner(folder, normalization="transductive")
    assert support.normalization == "support"
    for sx, sy, qx, _ in zip(*tasks):
        adapted = support.adapt(sx, sy)
        batch = adapted(qx)
        alone = torch.cat([adapted(x[None]) for x in qx])
        torch.testing.assert_close(alone, batch, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(transductive.adapt(sx, sy)(qx), batch)


def test_a_transductive_batch_of_one_warns_once(
    artifact: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = load_learner(artifact, normalization="transductive")
    tasks = held_out_tasks(tiny_images(), "test", 1, 0)
    adapted = loaded.adapt(tasks.support_x[0], tasks.support_y[0])
    with caplog.at_level(logging.WARNING, logger="metasearch.export.exported"):
        adapted(tasks.query_x[0])  # a whole query batch: no warning
        assert not caplog.records
        for image in tasks.query_x[0][:3]:
            adapted.predict(image[None])
    assert len(caplog.records) == 1 and "normalization='support'" in caplog.text
    caplog.clear()
    load_learner(artifact).adapt(tasks.support_x[0], tasks.support_y[0])(tasks.query_x[0][:1])
    assert not caplog.records  # support statistics: one image is fine


def test_transform_takes_images_paths_arrays_and_tensors(tmp_path: Path) -> None:
    learner = build_learner(conv_learner("maml").spec, (1, 8, 8), WAYS, "classification")
    transform = load_learner(
        export_learner(
            learner,
            tmp_path / "t",
            input_shape=(1, 8, 8),
            input_transform={"size": [8, 8], "mode": "L", "invert": True},
        )
    ).transform
    grey = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    image = Image.fromarray(grey, "L")
    expected = transform(image)
    assert expected.shape == (1, 8, 8)
    image.save(tmp_path / "image.png")
    rgb = np.repeat(grey[..., None], 3, axis=2)
    same = {
        "str path": str(tmp_path / "image.png"),
        "Path": tmp_path / "image.png",
        "uint8 HxW": grey,
        "uint8 HxWx1": grey[..., None],
        "uint8 HxWx3": rgb,
        "float HxW": grey / 255.0,
        "float32 HxWx3": (rgb / 255.0).astype(np.float32),
        "uint8 tensor CxHxW": torch.from_numpy(grey)[None],
        "float tensor HxW": torch.from_numpy(grey).float() / 255,
        "float tensor 3xHxW": torch.from_numpy(rgb).permute(2, 0, 1).double() / 255,
    }
    for name, value in same.items():
        assert torch.equal(transform(value), expected), name
    bad = {
        "list": [[0.5] * 8] * 8,
        "None": None,
        "bytes": b"png",
        "float out of range": grey.astype(np.float64),
        "int64 array": grey.astype(np.int64),
        "5 channels": np.zeros((8, 8, 5), np.uint8),
        "4-d tensor": torch.zeros(1, 1, 8, 8),
    }
    for name, value in bad.items():
        with pytest.raises(InputError, match="learner.transform takes a PIL image") as caught:
            transform(value)
        assert "\n" not in str(caught.value), name
    with pytest.raises(DataError, match="not in a format PIL can read"):
        (tmp_path / "not-an-image.png").write_bytes(b"text")
        transform(tmp_path / "not-an-image.png")
