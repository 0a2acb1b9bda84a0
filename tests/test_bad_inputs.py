"""Bad input of every kind, through the real command line: a non-zero exit, one line on stderr
that names the problem, no traceback, no stray file, and no hang.

The cases cover study files (each field with each kind of wrong value, and the file itself),
search spaces, image folders (for a search and for ``adapt``), exported learners, the adapt API
and the command-line options. Nothing meta-trains: every case is refused before work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes
from typer.testing import CliRunner

from metasearch.cli import app
from metasearch.export import export_learner, load_learner
from metasearch.export.artifact import metadata_checksum
from metasearch.learners import build_learner
from metasearch.search.files import parse_yaml
from metasearch.spec import LearnerSpec
from metasearch.tasks import image_folder

SIDE = 8  # pixels of every test image
HANG_SECONDS = 60


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A case that blocks (a FIFO opened for reading, an endless file) fails instead."""

    def hung(*_: object) -> None:
        raise TimeoutError(f"no answer within {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded images would be cached inside the case's folder, where a stray one shows."""
    monkeypatch.setenv("METASEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("METASEARCH_STORAGE", raising=False)


def tree(root: Path) -> set[str]:
    """Every path under ``root``, links not followed."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def refused(tmp_path: Path, args: list[str | Path], *expected: str) -> str:
    """Runs the command line on ``args`` and checks that it refused them properly; returns the
    error line with ``tmp_path`` written as ``<tmp>``."""
    before = tree(tmp_path)
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    message = lines[0].replace(str(tmp_path), "<tmp>")
    assert message.startswith("error: "), message
    for words in expected:
        assert words in message, message
    assert tree(tmp_path) == before, "stray files"
    return message


# --- study files ---------------------------------------------------------------------------

TINY_SPACE: dict[str, Any] = {
    "name": "tiny",
    "fixed": {"architecture.family": "mlp", "architecture.widths": [8]},
    "dimensions": {"inner.lr": {"type": "float", "low": 0.01, "high": 0.1, "log": True}},
}
STUDY: dict[str, Any] = {
    "name": "bad_inputs",
    "task": {"source": "sinusoid", "shots": 5, "query_points": 5},
    "space": TINY_SPACE,
    "budget": {"iterations": 2, "eval_tasks": 4},
    "trials": 1,
    "seed": 0,
    "device": "cpu",
}


def write_study(folder: Path, **fields: Any) -> Path:
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY | fields, sort_keys=False))
    return path


@pytest.mark.slow
def test_the_baseline_study_searches(tmp_path: Path) -> None:
    """The valid study every case below breaks in one place."""
    result = CliRunner().invoke(app, ["search", str(write_study(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "1 finished trials" in result.output


# field -> (wrong values, words the error names). Each value is wrong in one way: a wrong
# type, out of range, unknown, too large to run, or inconsistent with another field.
FIELD_CASES: dict[str, tuple[list[Any], str]] = {
    "name": (["", 5, [], {"a": 1}, None], "name"),
    "task": (
        [
            "sinusoid",
            [],
            {"source": "mnist"},
            {"shots": 5},
            {"source": "sinusoid", "shots": 0},
            {"source": "sinusoid", "shots": -1},
            {"source": "sinusoid", "shots": "many"},
            {"source": "sinusoid", "shots": 2.5},
            {"source": "sinusoid", "query_points": 0},
            {"source": "sinusoid", "ways": 5},
            {"source": "omniglot", "image_size": 30000},
            {"source": "omniglot", "image_size": 4},
            {"source": "omniglot", "ways": 1},
            {"source": "omniglot", "split": "random"},
            {"source": "omniglot", "rotations": "sometimes"},
            {"source": "image_folder"},
            {"source": "image_folder", "root": "x", "mode": "CMYK"},
            {"source": "image_folder", "root": "x", "image_size": 1e9},
        ],
        "task",
    ),
    "space": ([5, [], True, "", "missing.yaml", "/dev/zero", "/dev/null", "."], "space"),
    "sampler": (
        [
            "tpe",
            {"name": "annealing"},
            {"name": "tpe", "options": {"bogus": 1}},
            {"name": "tpe", "seed": "x"},
            {"name": "tpe", "options": []},
        ],
        "sampler",
    ),
    "pruner": (
        [{"name": "hyperband"}, {"name": "guess"}, {"name": "median", "options": {"bogus": 1}}],
        "pruner",
    ),
    "objectives": (
        [[], ["accuracy"], ["query_loss", "query_loss"], ["query_loss", "accuracy"], ["speed"]],
        "objectives",
    ),
    "budget": (
        [
            {"iterations": 0},
            {"iterations": -1},
            {"iterations": 1e12},
            {"unit": "examples", "examples": 1e30},
            {"unit": "seconds"},
            {"iterations": "many"},
            {"iterations": 1.5},
            {"eval_every": 0},
            {"eval_tasks": 1},
            {"eval_tasks": 1e9},
            {"time_limit": 0},
            {"time_limit": -5},
            {"iteration": 10},
            [],
        ],
        "budget",
    ),
    "trials": ([0, -1, "x", 1.5, []], "trials"),
    "timeout": ([0, -1, "x"], "timeout"),
    "seed": (["x", 1.5, [1]], "seed"),
    "storage": ([5, []], "storage"),
    "artifacts": ([5, [], "", "s3://", "s3://bucket/prefix", "gs://bucket"], "artifacts"),
    "device": (["tpu", "cuda:x", "", 5], "device"),
    "strategy": (["evolution", 1], "strategy"),
    "darts": ([{}, {"iterations": 5}], "darts"),
    "checkpoint_every": ([0, -1, "x"], "checkpoint_every"),
    "heartbeat": ([{"interval": 0}, {"interval": 5, "grace_period": 5}, 5], "heartbeat"),
    "population": ([0, -2, "x", 10**9], "population"),
    "trails": ([5], "trails: unknown field"),
}
FIELD_PARAMS = [
    pytest.param(field, value, words, id=f"{field}-{i}")
    for field, (values, words) in FIELD_CASES.items()
    for i, value in enumerate(values)
]


@pytest.mark.parametrize(("field", "value", "words"), FIELD_PARAMS)
def test_a_wrong_study_field_is_named(field: str, value: Any, words: str, tmp_path: Path) -> None:
    refused(tmp_path, ["search", write_study(tmp_path, **{field: value})], words)


@pytest.mark.slow
def test_many_problems_are_counted_not_listed(tmp_path: Path) -> None:
    study = write_study(tmp_path, objectives=["speed"] * 50_000)
    message = refused(tmp_path, ["search", study], "objectives.4: Input should be", "49995 more")
    assert len(message) < 1000


def test_darts_needs_image_tasks_and_one_candidate(tmp_path: Path) -> None:
    refused(tmp_path, ["search", write_study(tmp_path, strategy="darts")], "image tasks")
    omniglot = {"source": "omniglot"}
    darts = write_study(tmp_path, task=omniglot, strategy="darts", population=2)
    refused(tmp_path, ["search", darts], "population: 1")


def alias_bomb(levels: int = 9) -> bytes:
    """A "billion laughs" file: each level repeats the one before ten times."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return ("\n".join(lines) + f"\nname: *a{levels - 1}\n").encode()


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def make_loop(path: Path) -> Path:
    path.symlink_to(path.name)  # a link to itself
    return path


def make_broken_link(path: Path) -> Path:
    path.symlink_to(path.with_name("gone"))
    return path


def make_dir(path: Path) -> Path:
    path.mkdir()
    return path


# A broken file, written where the study file (or the search space it names) is expected.
BROKEN_YAML: dict[str, tuple[Callable[[Path], Any], str]] = {
    "unclosed": (lambda p: p.write_text("name: [unclosed\n"), "not valid YAML"),
    "list": (lambda p: p.write_text("- name\n- task\n"), "must hold a mapping"),
    "scalar": (lambda p: p.write_text("5\n"), "must hold a mapping"),
    "empty": (lambda p: p.write_text(""), "must hold a mapping"),
    "binary": (lambda p: p.write_bytes(b"\x00\x01\x80garbage"), "not valid YAML"),
    "tab indent": (lambda p: p.write_text("name: x\n\tbad: 1\n"), "not valid YAML"),
    "python tag": (
        lambda p: p.write_text("name: !!python/object/apply:os.system ['touch pwned']\n"),
        "not valid YAML",
    ),
    "undefined alias": (lambda p: p.write_text("name: *nowhere\n"), "undefined alias"),
    "duplicate anchor": (lambda p: p.write_text("a: &x 1\nb: &x 2\n"), "duplicate anchor"),
    "alias bomb": (lambda p: p.write_bytes(alias_bomb()), "limit of 100,000 values"),
    "self alias": (lambda p: p.write_text("name: &a [*a]\n"), "alias inside its own anchor"),
    "deep nesting": (lambda p: p.write_text("name: " + "[" * 5000 + "]" * 5000), "limit of 32"),
    "deep mapping": (lambda p: p.write_text("name: " + "{a: " * 40 + "1" + "}" * 40), "limit"),
    "too large": (lambda p: p.write_text("# padding\n" * 120_000), "limit of 1,048,576 bytes"),
    "fifo": (make_fifo, "is a FIFO, not a regular file"),
    "directory": (make_dir, "is a directory, not a regular file"),
    "link loop": (make_loop, "Too many levels of symbolic links"),
    "broken link": (make_broken_link, "cannot read"),
    "missing": (lambda p: None, "cannot read"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN_YAML))
def test_a_broken_study_file_is_refused(case: str, tmp_path: Path) -> None:
    make, words = BROKEN_YAML[case]
    make(tmp_path / "study.yaml")
    refused(tmp_path, ["search", tmp_path / "study.yaml"], "study.yaml", words)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BROKEN_YAML))
def test_a_broken_search_space_file_is_refused(case: str, tmp_path: Path) -> None:
    make, words = BROKEN_YAML[case]
    make(tmp_path / "space.yaml")
    study = write_study(tmp_path, space="space.yaml")
    refused(tmp_path, ["search", study], "space.yaml", words)


def test_limits_leave_ordinary_files_alone(tmp_path: Path) -> None:
    """Anchors used with measure, long lists and deep-enough nesting still read."""
    text = (
        "defaults: &lr {type: float, low: 0.01, high: 0.1}\n"
        "a: *lr\nb: *lr\n"
        f"widths: {list(range(5000))}\n"
        "deep: " + "[" * 30 + "]" * 30 + "\n"
    )
    data = parse_yaml(text, "test")
    assert data["a"] == data["b"] == {"type": "float", "low": 0.01, "high": 0.1}
    assert len(data["widths"]) == 5000


@pytest.mark.parametrize("command", ["show", "report", "export", "worker"])
def test_every_command_reads_study_files_within_limits(command: str, tmp_path: Path) -> None:
    (tmp_path / "study.yaml").write_bytes(alias_bomb())
    out = ["--out", tmp_path / "out"] if command in ("report", "export") else []
    refused(tmp_path, [command, tmp_path / "study.yaml", *out], "limit of 100,000 values")


# --- search spaces -------------------------------------------------------------------------


def space_with(section: str, entries: dict[str, Any]) -> dict[str, Any]:
    return TINY_SPACE | {section: TINY_SPACE.get(section, {}) | entries}


def range_of(kind: str, low: Any, high: Any, **more: Any) -> dict[str, Any]:
    return {"type": kind, "low": low, "high": high, **more}


SPACE_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "no name": ({"fixed": {}}, "name: Field required"),
    "unknown section": (TINY_SPACE | {"fixes": {}}, "fixes: unknown field"),
    "unknown field": (space_with("fixed", {"inner.rate": 0.1}), "unknown field 'inner.rate'"),
    "bad algorithm": (space_with("fixed", {"outer.algorithm": "magic"}), "outer.algorithm"),
    "huge width": (space_with("fixed", {"architecture.widths": [10**9]}), "limit of 1,024"),
    "many widths": (space_with("fixed", {"architecture.widths": [8] * 40}), "limit of 32"),
    "huge depth": (
        {
            "name": "deep",
            "fixed": {"architecture.widths": 8},
            "dimensions": {"architecture.depth": range_of("int", 1, 1000)},
        },
        "limit of 32",
    ),
    "huge meta-batch": (
        space_with("fixed", {"outer.meta_batch_size": 10**7}),
        "outer.meta_batch_size: 10000000 exceeds the limit",
    ),
    "huge iterations": (
        space_with("dimensions", {"outer.iterations": range_of("int", 10, 10**12)}),
        "limit of 1,000,000",
    ),
    "too many steps": (space_with("fixed", {"inner.steps": 1000}), "inner.steps"),
    "negative lr": (space_with("fixed", {"inner.lr": -1.0}), "inner.lr"),
    "unknown type": (space_with("dimensions", {"inner.lr": {"type": "normal"}}), "inner.lr"),
    "low above high": (
        space_with("dimensions", {"inner.lr": range_of("float", 1.0, 0.1)}),
        "swap them",
    ),
    "log from zero": (
        space_with("dimensions", {"inner.lr": range_of("float", 0.0, 0.1, log=True)}),
        "log scale needs low > 0",
    ),
    "infinite bound": (
        space_with("dimensions", {"inner.lr": range_of("float", 0.1, float("inf"))}),
        "finite",
    ),
    "string bound": (space_with("dimensions", {"inner.lr": range_of("float", "a", 1)}), "low"),
    "no choices": (
        space_with("dimensions", {"outer.algorithm": {"type": "categorical", "choices": []}}),
        "choices",
    ),
    "too many choices": (
        space_with(
            "dimensions", {"inner.lr": {"type": "categorical", "choices": list(range(1, 2001))}}
        ),
        "at most 1000 items",
    ),
    "repeated choice": (
        space_with(
            "dimensions", {"outer.algorithm": {"type": "categorical", "choices": ["maml"] * 2}}
        ),
        "choices repeat a value",
    ),
    "mapping choice": (
        space_with(
            "dimensions", {"outer.algorithm": {"type": "categorical", "choices": [{"a": 1}]}}
        ),
        "choices must be strings, numbers or booleans",
    ),
    "condition on unknown": (
        space_with(
            "dimensions", {"inner.steps": range_of("int", 1, 3) | {"when": {"outer.magic": 1}}}
        ),
        "unknown field 'outer.magic'",
    ),
    "condition on later": (
        space_with(
            "dimensions",
            {
                "inner.steps": range_of("int", 1, 3) | {"when": {"outer.algorithm": "maml"}},
                "outer.algorithm": {"type": "categorical", "choices": ["maml", "fomaml"]},
            },
        ),
        "sample outer.algorithm earlier",
    ),
    "widths without depth": (
        {
            "name": "w",
            "dimensions": {"architecture.widths": range_of("int", 8, 16, per_layer=True)},
        },
        "needs architecture.depth",
    ),
    "per_layer elsewhere": (
        space_with("dimensions", {"inner.steps": range_of("int", 1, 3, per_layer=True)}),
        "per_layer applies to architecture.widths only",
    ),
    "derived depth": (
        space_with("derived", {"architecture.depth": {"from": "outer.algorithm", "map": {}}}),
        "derived",
    ),
    "derived from unknown": (
        space_with("derived", {"inner.learned": {"from": "outer.magic", "map": {"a": True}}}),
        "unknown field 'outer.magic'",
    ),
    "derived huge map": (
        space_with(
            "derived",
            {"inner.lr": {"from": "inner.steps", "map": {i: 0.1 for i in range(1, 1200)}}},
        ),
        "at most 1000 items",
    ),
    "fixed and sampled": (space_with("fixed", {"inner.lr": 0.1}), "both fixed and a dimension"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SPACE_CASES))
def test_a_wrong_search_space_is_named(case: str, tmp_path: Path) -> None:
    space, words = SPACE_CASES[case]
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space, sort_keys=False))
    refused(tmp_path, ["search", write_study(tmp_path, space="space.yaml")], "space.yaml", words)


# --- image folders -------------------------------------------------------------------------


def write_png(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIDE, SIDE), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def corrupt_png(path: Path) -> None:
    data = bytearray(write_png(path, 99).read_bytes())
    data[45:52] = bytes(7)  # inside the compressed pixels: their checksum no longer matches
    path.write_bytes(bytes(data))


def truncated_png(path: Path) -> None:
    path.write_bytes(write_png(path, 98).read_bytes()[:60])


# What lands in a class folder as "bad.png" (or as named); every one is a one-line error.
BAD_IMAGES: dict[str, tuple[str, Callable[[Path], Any], str]] = {
    "corrupt": ("bad.png", corrupt_png, "cannot decode image"),
    "truncated": ("bad.png", truncated_png, "(image file is truncated)"),
    "empty": ("bad.png", lambda p: p.write_bytes(b""), "not in a format PIL can read"),
    "text as jpg": ("bad.jpg", lambda p: p.write_text("not an image\n"), "PIL can read"),
    "only a header": ("bad.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "PIL can read"),
    "gif garbage": ("bad.gif", lambda p: p.write_bytes(b"GIF89a" + bytes(20)), "PIL can read"),
    "bomb header": ("bad.png", lambda p: p.write_bytes(png_claiming(7000, 7000)), "limit of"),
    "giant bomb": (
        "bad.png",
        lambda p: p.write_bytes(png_claiming(60000, 60000)),
        "decompression bomb",
    ),
    "warned bomb": (
        "bad.png",
        lambda p: p.write_bytes(png_claiming(12000, 12000)),
        "decompression bomb",
    ),
    "directory": ("bad.png", make_dir, "is a directory, not a regular file"),
    "fifo": ("bad.png", make_fifo, "is a FIFO, not a regular file"),
    "link loop": ("bad.png", make_loop, "cannot read image"),
    "broken link": ("bad.png", make_broken_link, "cannot read image"),
}


def write_classes(root: Path, n_classes: int, per_class: int) -> list[Path]:
    folders = []
    for c in range(n_classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            write_png(folder / f"{i}.png", seed=100 * c + i)
        folders.append(folder)
    return folders


def folder_study(tmp_path: Path) -> Path:
    task = {
        "source": "image_folder",
        "root": str(tmp_path / "classes"),
        "ways": 2,
        "shots": 1,
        "query_shots": 1,
        "image_size": SIDE,
        "mode": "L",
    }
    return write_study(tmp_path, task=task, objectives=["query_loss"])


def test_the_baseline_image_folder_loads(tmp_path: Path) -> None:
    write_classes(tmp_path / "classes", n_classes=14, per_class=2)
    source = image_folder(tmp_path / "classes", ways=2, shots=1, query_shots=1, image_size=SIDE)
    assert source.images.shape == (28, 3, SIDE, SIDE)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_a_bad_image_in_a_class_folder_is_named(case: str, tmp_path: Path) -> None:
    classes = write_classes(tmp_path / "classes", n_classes=14, per_class=2)
    name, make, words = BAD_IMAGES[case]
    make(classes[3] / name)
    refused(tmp_path, ["search", folder_study(tmp_path)], f"class3/{name}", words)


def test_a_missing_or_empty_image_folder_is_refused(tmp_path: Path) -> None:
    study = folder_study(tmp_path)
    refused(tmp_path, ["search", study], "does not exist")
    (tmp_path / "classes").write_text("a file, not a folder")
    refused(tmp_path, ["search", study], "does not exist")
    (tmp_path / "classes").unlink()
    (tmp_path / "classes" / "class0").mkdir(parents=True)
    refused(tmp_path, ["search", study], "no class folder", "holds 2 images")


# --- exported learners ---------------------------------------------------------------------

WAYS = 2


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small 2-way learner of 8x8 grey images, exported once; cases damage copies of it."""
    spec = LearnerSpec.from_dict(
        {"architecture": {"widths": [4, 4]}, "inner": {"steps": 1, "lr": 0.4}}
    )
    learner = build_learner(spec, (1, SIDE, SIDE), WAYS, "classification", seed=0)
    task = {"source": "image_folder", "root": "nowhere", "ways": WAYS, "image_size": SIDE}
    return export_learner(
        learner,
        tmp_path_factory.mktemp("exported") / "learner",
        input_shape=(1, SIDE, SIDE),
        source_description={"source": "image_folder", "task": task},
        input_transform={"size": [SIDE, SIDE], "mode": "L", "invert": False},
        scores={"test": {"query_loss": 0.5}},
    )


@pytest.fixture
def learner_dir(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "learner"))


def edited(edit: Callable[[dict[str, Any]], Any], sign: bool) -> Callable[[Path], None]:
    """Edits ``learner.json``; ``sign`` recomputes its checksum, as a deliberate edit would."""

    def apply(learner: Path) -> None:
        path = learner / "learner.json"
        metadata = json.loads(path.read_text())
        edit(metadata)
        if sign:
            metadata["metadata_sha256"] = metadata_checksum(metadata)
        path.write_text(json.dumps(metadata))

    return apply


def new_weights(change: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[Path], None]:
    """Rewrites the weights through ``change`` and records their checksum, signed."""

    def apply(learner: Path) -> None:
        path = learner / "weights.safetensors"
        tensors = tensors_from_bytes(path.read_bytes())
        data = tensors_to_bytes({n: change(t) for n, t in tensors.items()})
        path.write_bytes(data)
        digest = hashlib.sha256(data).hexdigest()
        edited(lambda m: m["weights"].update(sha256=digest), sign=True)(learner)

    return apply


def replace(name: str, make: Callable[[Path], Any]) -> Callable[[Path], None]:
    def apply(learner: Path) -> None:
        (learner / name).unlink()
        make(learner / name)

    return apply


def set_in(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(metadata: dict[str, Any]) -> None:
        for key in keys[:-1]:
            metadata = metadata[key]
        metadata[keys[-1]] = value

    return edit


def flip_a_weight_byte(learner: Path) -> None:
    path = learner / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x10
    path.write_bytes(bytes(data))


def last_entry_infinite(tensor: torch.Tensor) -> torch.Tensor:
    return torch.cat([tensor.flatten()[:-1], torch.tensor([float("inf")])]).view_as(tensor)


CHECKSUM = "does not match its checksum (metadata_sha256)"
ARTIFACT_CASES: dict[str, tuple[Callable[[Path], Any], str]] = {
    # learner.json as a file
    "metadata missing": (lambda a: (a / "learner.json").unlink(), "holds no learner.json"),
    "metadata empty": (lambda a: (a / "learner.json").write_text(""), "not valid JSON"),
    "metadata garbage": (lambda a: (a / "learner.json").write_bytes(b"\x00{no"), "not valid JSON"),
    "metadata a list": (lambda a: (a / "learner.json").write_text("[]"), "not an exported"),
    "metadata nested": (
        lambda a: (a / "learner.json").write_text("[" * 100_000 + "]" * 100_000),
        "nests deeper than the limit of 32 levels",
    ),
    "metadata too large": (
        lambda a: (a / "learner.json").write_text(" " * (2 << 20) + "{}"),
        "larger than the limit of 1,048,576 bytes",
    ),
    "metadata a fifo": (replace("learner.json", make_fifo), "is a FIFO, not a regular file"),
    "metadata a directory": (replace("learner.json", make_dir), "is a directory"),
    "metadata a link loop": (replace("learner.json", make_loop), "symbolic links"),
    "huge number": (
        lambda a: (a / "learner.json").write_text('{"format": ' + "9" * 5000 + "}"),
        "not valid JSON",
    ),
    # edited by hand, checksum left as it was
    "inner lr raised": (edited(set_in("spec", "inner", "lr", value=50.0), False), CHECKSUM),
    "inner steps raised": (edited(set_in("spec", "inner", "steps", value=100), False), CHECKSUM),
    "score edited": (edited(set_in("scores", "test", "query_loss", value=0.01), False), CHECKSUM),
    "transform edited": (
        edited(set_in("input_transform", "invert", value=True), False),
        CHECKSUM,
    ),
    "weights checksum edited": (
        edited(set_in("weights", "sha256", value="0" * 64), False),
        CHECKSUM,
    ),
    "checksum removed": (edited(lambda m: m.pop("metadata_sha256"), False), CHECKSUM),
    "format renamed": (edited(set_in("format", value="onnx"), False), "format 'onnx'"),
    "old version": (edited(set_in("format_version", value=1), False), "format version 1"),
    # edited and signed again: still checked before anything is built
    "input shape huge": (
        edited(set_in("input_shape", value=[1e9]), True),
        "input_shape.0: Input should be less than or equal to 512",
    ),
    "input shape long": (
        edited(set_in("input_shape", value=[1, 2, 3, 4]), True),
        "input_shape: Tuple should have at most 3 items",
    ),
    "input shape empty": (edited(set_in("input_shape", value=[]), True), "input_shape"),
    "input shape negative": (edited(set_in("input_shape", value=[1, -8, 8]), True), "input_shape"),
    "outputs zero": (edited(set_in("n_outputs", value=0), True), "n_outputs"),
    "outputs huge": (edited(set_in("n_outputs", value=10**9), True), "n_outputs"),
    "transform huge": (
        edited(set_in("input_transform", "size", value=[30000, 30000]), True),
        "input transform",
    ),
    "transform mismatch": (
        edited(set_in("input_transform", "mode", value="RGB"), True),
        "the input transform makes tensors of shape [3, 8, 8]",
    ),
    "spec widened": (
        edited(set_in("spec", "architecture", "widths", value=[100_000, 100_000]), True),
        "does not fit the learner learner.json describes",
    ),
    "spec invalid": (
        edited(set_in("spec", "outer", "algorithm", value="magic"), True),
        "outer.algorithm",
    ),
    "task kind unknown": (edited(set_in("task_kind", value="ranking"), True), "task_kind"),
    # the weights file
    "weights missing": (lambda a: (a / "weights.safetensors").unlink(), "is missing"),
    "weights empty": (lambda a: (a / "weights.safetensors").write_bytes(b""), "checksum"),
    "weights truncated": (
        lambda a: (a / "weights.safetensors").write_bytes(
            (a / "weights.safetensors").read_bytes()[:100]
        ),
        "checksum",
    ),
    "weights flipped": (flip_a_weight_byte, "checksum"),
    "weights a fifo": (replace("weights.safetensors", make_fifo), "is a FIFO"),
    "weights a directory": (replace("weights.safetensors", make_dir), "is a directory"),
    "weights all nan": (
        new_weights(lambda t: torch.full_like(t, float("nan"))),
        "hold NaN or infinite values",
    ),
    "weights one inf": (new_weights(last_entry_infinite), "hold NaN or infinite values"),
}


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path: Path) -> None:
    spec = LearnerSpec.from_dict({"architecture": {"family": "mlp", "widths": [4]}})
    learner = build_learner(spec, (1,), 1, "regression", seed=0)
    note = '[{"' * 200 + '\\"]'  # brackets and escaped quotes inside one string
    out = export_learner(learner, tmp_path / "l", input_shape=(1,), provenance={"note": note})
    assert load_learner(out).metadata["provenance"]["note"] == note


def test_the_intact_learner_loads(learner_dir: Path) -> None:
    assert load_learner(learner_dir).input_shape == (1, SIDE, SIDE)
    new_weights(lambda t: t)(learner_dir)  # a rewrite that keeps the values stays loadable
    assert load_learner(learner_dir).learner.n_outputs == WAYS


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ARTIFACT_CASES))
def test_a_broken_learner_is_refused(case: str, learner_dir: Path, tmp_path: Path) -> None:
    damage, words = ARTIFACT_CASES[case]
    damage(learner_dir)
    refused(tmp_path, ["evaluate", learner_dir], words)


# --- adapt from folders --------------------------------------------------------------------


def adapt_folders(tmp_path: Path) -> tuple[Path, Path]:
    support, query = tmp_path / "support", tmp_path / "query"
    write_classes(support, n_classes=WAYS, per_class=1)
    write_classes(query, n_classes=WAYS, per_class=1)
    return support, query


def test_adapt_labels_clean_folders(learner_dir: Path, tmp_path: Path) -> None:
    support, query = adapt_folders(tmp_path)
    args = ["adapt", learner_dir, "--support", support, "--query", query, "--device", "cpu"]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "accuracy by the query folders' names" in result.output


@pytest.mark.slow
@pytest.mark.parametrize("where", ["support", "query"])
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_adapt_names_a_bad_image(case: str, where: str, learner_dir: Path, tmp_path: Path) -> None:
    support, query = adapt_folders(tmp_path)
    name, make, words = BAD_IMAGES[case]
    make((support if where == "support" else query) / "class1" / name)
    args = ["adapt", learner_dir, "--support", support, "--query", query]
    refused(tmp_path, args, f"{where}/class1/{name}", words)


def test_adapt_refuses_empty_and_missing_folders(learner_dir: Path, tmp_path: Path) -> None:
    support, query = adapt_folders(tmp_path)
    args = ["adapt", learner_dir, "--support", support, "--query", query]
    (support / "class1" / "0.png").unlink()
    refused(tmp_path, args, "class folder <tmp>/support/class1 holds no image")
    write_png(support / "class1" / "0.png", 7)
    (query / "class0" / "0.png").unlink()
    refused(tmp_path, args, "class folder <tmp>/query/class0 holds no image")
    write_png(query / "class0" / "0.png", 8)
    make_dir(support / "class2")
    refused(tmp_path, args, "takes 2-way tasks; found 3 class folders")
    shutil.rmtree(support / "class2")
    missing = ["adapt", learner_dir, "--support", support, "--query", tmp_path / "nowhere"]
    refused(tmp_path, missing, "query folder <tmp>/nowhere does not exist")
    shutil.rmtree(query)
    query.mkdir()
    refused(tmp_path, args, "no images under <tmp>/query")


def test_normalization_options_are_checked(learner_dir: Path, tmp_path: Path) -> None:
    support, query = adapt_folders(tmp_path)
    args = ["adapt", learner_dir, "--support", support, "--query", query, "--device", "cpu"]
    result = CliRunner().invoke(app, [str(a) for a in [*args, "--normalization", "transductive"]])
    assert result.exit_code == 0, result.output
    words = "--normalization takes transductive or support, not 'running'"
    refused(tmp_path, [*args, "--normalization", "running"], words)
    refused(tmp_path, ["evaluate", learner_dir, "--normalization", "running"], words)


# --- the adapt API -------------------------------------------------------------------------


def support_set() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(2 * WAYS, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    return x, torch.arange(WAYS).repeat(2)


def poisoned(value: float) -> torch.Tensor:
    x, _ = support_set()
    x[1, 0, 2, 3] = value
    return x


# name -> (support_x, support_y, query_x or None, words of the ValueError)
ADAPT_CASES: dict[str, tuple[Any, Any, Any, str]] = {
    "nan support": (poisoned(float("nan")), support_set()[1], None, "support_x holds NaN"),
    "inf support": (poisoned(float("inf")), support_set()[1], None, "support_x holds NaN"),
    "-inf support": (poisoned(float("-inf")), support_set()[1], None, "support_x holds NaN"),
    "complex support": (
        support_set()[0].to(torch.complex64),
        support_set()[1],
        None,
        "support_x must hold real numbers",
    ),
    "nan query": (*support_set(), poisoned(float("nan")), "query_x holds NaN"),
    "inf query": (*support_set(), poisoned(float("inf")), "query_x holds NaN"),
    "float labels": (support_set()[0], support_set()[1].float(), None, "integer class labels"),
    "labels too high": (support_set()[0], support_set()[1] + 1, None, "labels must be 0..1"),
    "negative labels": (support_set()[0], support_set()[1] - 1, None, "labels must be 0..1"),
    "too few labels": (support_set()[0], support_set()[1][:3], None, "4 integer class labels"),
    "wrong shape": (support_set()[0][:, :, :4], support_set()[1], None, "support_x must be"),
    "empty support": (
        torch.zeros(0, 1, SIDE, SIDE),
        torch.zeros(0, dtype=torch.long),
        None,
        "holds no examples",
    ),
    "query wrong shape": (*support_set(), torch.rand(SIDE, SIDE), "query_x must be a batch"),
}


@pytest.mark.parametrize("case", list(ADAPT_CASES))
def test_adapt_refuses_bad_tensors(case: str, exported: Path, tmp_path: Path) -> None:
    support_x, support_y, query_x, words = ADAPT_CASES[case]
    learner = load_learner(exported)
    before = tree(exported)
    with pytest.raises(ValueError) as caught:
        adapted = learner.adapt(support_x, support_y)
        adapted(query_x)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert tree(exported) == before


REGRESSION_TARGETS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


@pytest.mark.parametrize("kind", list(REGRESSION_TARGETS))
def test_adapt_refuses_non_finite_regression_targets(kind: str, tmp_path: Path) -> None:
    spec = LearnerSpec.from_dict({"architecture": {"family": "mlp", "widths": [8]}})
    learner = build_learner(spec, (1,), 1, "regression", seed=0)
    loaded = load_learner(export_learner(learner, tmp_path / "sine", input_shape=(1,)))
    x = torch.linspace(-1, 1, 5)[:, None]
    y = torch.sin(x)
    loaded.adapt(x, y)  # finite targets adapt
    y[2, 0] = REGRESSION_TARGETS[kind]
    with pytest.raises(ValueError, match="support_y holds NaN or infinite values"):
        loaded.adapt(x, y)


# --- command-line options ------------------------------------------------------------------


def under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path / "a_file" / "out"


def an_existing_file(tmp_path: Path) -> Path:
    (tmp_path / "taken").write_text("a file")
    return tmp_path / "taken"


OUT_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "existing file": (an_existing_file, "--out <tmp>/taken is an existing file"),
    "under a file": (under_a_file, "which is a file"),
    "unwritable": (lambda _: Path("/proc/metasearch-out"), "is not writable"),
}


# command -> (arguments after the command, with {study}, {learner} and {tmp} filled in; words)
OPTION_CASES: dict[str, tuple[list[str], str]] = {
    "show top 0": (["show", "{study}", "--top", "0"], "--top must be at least 1, got 0"),
    "show top -5": (["show", "{study}", "--top", "-5"], "--top must be at least 1"),
    "search trials 0": (["search", "{study}", "--n-trials", "0"], "--n-trials must be at least"),
    "search trials -1": (["search", "{study}", "--n-trials", "-1"], "--n-trials must be at least"),
    "search timeout 0": (["search", "{study}", "--timeout", "0"], "--timeout must be more than 0"),
    "search timeout -3": (["search", "{study}", "--timeout", "-3"], "--timeout must be more"),
    "search timeout nan": (["search", "{study}", "--timeout", "nan"], "--timeout must be more"),
    "search workers 0": (["search", "{study}", "--workers", "0"], "--workers must be between 1"),
    "search workers 10**5": (["search", "{study}", "--workers", "100000"], "and 256, got"),
    "worker trials 0": (["worker", "{study}", "--n-trials", "0"], "--n-trials must be at least"),
    "worker timeout 0": (["worker", "{study}", "--timeout", "0"], "--timeout must be more"),
    "evaluate episodes 0": (["evaluate", "{learner}", "--episodes", "0"], "--episodes must be"),
    "evaluate episodes 1": (["evaluate", "{learner}", "--episodes", "1"], "2 and 10,000, got 1"),
    "evaluate episodes -3": (["evaluate", "{learner}", "--episodes", "-3"], "--episodes must be"),
    "evaluate episodes 10**6": (
        ["evaluate", "{learner}", "--episodes", "1000000"],
        "--episodes must be between 2 and 10,000, got 1000000",
    ),
    "evaluate shots 10**7": (
        ["evaluate", "{learner}", "--shots", "10000000"],
        "--shots must be between 1 and 1,000",
    ),
    "evaluate ways 1": (["evaluate", "{learner}", "--ways", "1"], "--ways must be at least 2"),
    "evaluate shots 0": (["evaluate", "{learner}", "--shots", "0"], "--shots must be between 1"),
    "evaluate ways 5": (["evaluate", "{learner}", "--ways", "5"], "cannot take 5-way tasks"),
    "train seconds 0": (
        ["train", "{study}", "--out", "{tmp}/o", "--seconds", "0"],
        "--seconds must be more than 0",
    ),
    "train iterations 0": (
        ["train", "{study}", "--out", "{tmp}/o", "--iterations", "0"],
        "--iterations must be at least 1",
    ),
    "train untimed iterations": (
        ["train", "{study}", "--out", "{tmp}/o", "--iterations", "10000000"],
        "--iterations above 1,000,000 need --seconds too",
    ),
    "train untimed examples": (
        ["train", "{study}", "--out", "{tmp}/o", "--examples", "1e12"],
        "--examples above 100,000,000 need --seconds too",
    ),
    "train examples -1": (
        ["train", "{study}", "--out", "{tmp}/o", "--examples", "-1"],
        "--examples must be more than 0",
    ),
    "enqueue alias bomb": (
        ["enqueue", "{study}", "inner.lr=" + alias_bomb().decode()],
        "the value of inner.lr holds more than the limit of 100,000 values",
    ),
    "enqueue deep value": (
        ["enqueue", "{study}", "inner.lr=" + "[" * 100 + "]" * 100],
        "the value of inner.lr nests deeper than the limit of 32 levels",
    ),
    "dashboard port 0": (["dashboard", "{study}", "--port", "0"], "--port must be between 1"),
    "dashboard port 70000": (["dashboard", "{study}", "--port", "70000"], "got 70000"),
    "dashboard port -1": (["dashboard", "{study}", "--port", "-1"], "--port must be between"),
}
for _command in ("search", "worker", "export", "train", "evaluate", "adapt"):
    for _device in ("tpu", "cuda:x", "gpu0", "CPU"):
        _target = "{learner}" if _command in ("evaluate", "adapt") else "{study}"
        _more = {
            "export": ["--out", "{tmp}/o"],
            "train": ["--out", "{tmp}/o"],
            "adapt": ["--support", "{tmp}", "--query", "{tmp}"],
        }.get(_command, [])
        OPTION_CASES[f"{_command} device {_device}"] = (
            [_command, _target, "--device", _device, *_more],
            f"unknown device '{_device}'; use auto, cpu, cuda or cuda:N",
        )


@pytest.mark.slow
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_a_wrong_option_gets_one_line(case: str, learner_dir: Path, tmp_path: Path) -> None:
    args, words = OPTION_CASES[case]
    study = write_study(tmp_path)
    filled = [a.format(study=study, learner=learner_dir, tmp=tmp_path) for a in args]
    refused(tmp_path, filled, words)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_is_refused_where_there_is_none(device: str, tmp_path: Path) -> None:
    study = write_study(tmp_path)
    refused(tmp_path, ["search", study, "--device", device], "CUDA, which is not available")


def test_a_cuda_device_beyond_the_machines_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    study = write_study(tmp_path)
    refused(tmp_path, ["search", study, "--device", "cuda:2"], "no device cuda:2", "cuda:1")


@pytest.mark.parametrize("command", ["export", "report", "train"])
@pytest.mark.parametrize("case", list(OUT_CASES))
def test_an_out_that_cannot_be_written_is_refused(command: str, case: str, tmp_path: Path) -> None:
    make, words = OUT_CASES[case]
    out = make(tmp_path)
    refused(tmp_path, [command, write_study(tmp_path), "--out", out], words)


@pytest.mark.parametrize(
    "args",
    [
        ["show", "s.yaml", "--top", "many"],
        ["dashboard", "s.yaml", "--port", "http"],
        ["evaluate", "learner", "--episodes", "1.5"],
        ["show", "s.yaml", "--format", "xml"],
        ["search"],
        ["frobnicate"],
    ],
    ids=lambda args: " ".join(args),
)
def test_typer_usage_errors_stay_usage_errors(args: list[str], tmp_path: Path) -> None:
    """Typer's own messages for unparseable options: exit 2, a usage hint, no traceback."""
    before = tree(tmp_path)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output and "Usage:" in result.output
    assert tree(tmp_path) == before


# --- the same refusals from a real process -------------------------------------------------


def fifo_image(tmp_path: Path, learner: Path) -> list[str | Path]:
    classes = write_classes(tmp_path / "classes", n_classes=14, per_class=2)
    make_fifo(classes[0] / "x.png")
    return ["search", folder_study(tmp_path)]


def too_few_images(tmp_path: Path, learner: Path) -> list[str | Path]:
    write_classes(tmp_path / "classes", n_classes=3, per_class=1)
    return ["search", folder_study(tmp_path)]


def top_zero(tmp_path: Path, learner: Path) -> list[str | Path]:
    return ["show", write_study(tmp_path), "--top", "0"]


IN_A_PROCESS = {  # one case per way a second line could reach the real stderr
    "fifo image": (fifo_image, "is a FIFO"),  # decoding threads
    "too few images": (too_few_images, "no class folder"),  # a logged warning
    "top zero": (top_zero, "--top must be at least 1"),  # before any study is read
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(IN_A_PROCESS))
def test_a_real_process_prints_one_line(case: str, learner_dir: Path, tmp_path: Path) -> None:
    """Logging and warnings reach the real stderr only: one line there too, and no hang."""
    make, words = IN_A_PROCESS[case]
    args = make(tmp_path, learner_dir)
    before = tree(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "metasearch", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
        env=os.environ | {"METASEARCH_CACHE": str(tmp_path / "cache")},
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert tree(tmp_path) == before, "stray files"
