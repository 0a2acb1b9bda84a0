"""Task options, declared once per source: a study file and the Python factory take the same
ones and build the same source, tasks stored before new options still read, and a mistake
says what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image

from metasearch.errors import DataError, SpecError
from metasearch.search import build_source, load_study_file
from metasearch.tasks import (
    SPLITS,
    ClassificationSource,
    ImageFolderTask,
    OmniglotTask,
    SinusoidSource,
    SinusoidTask,
    TaskSource,
    build_task_source,
    image_folder,
    omniglot,
    parse_task,
)

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"sinusoid": SinusoidTask, "omniglot": OmniglotTask, "image_folder": ImageFolderTask}
# Every option of every source, each away from its default.
OPTIONS: dict[str, dict[str, Any]] = {
    "sinusoid": {
        "shots": 3,
        "query_points": 4,
        "amplitude": [1.0, 2.0],
        "phase": [0.5, 1.0],
        "x_range": [-1.0, 1.0],
    },
    "omniglot": {
        "ways": 3,
        "shots": 2,
        "query_shots": 1,
        "image_size": 8,
        "rotations": False,
        "rotate_held_out": True,
        "classes_from": "alphabet",
        "split": "lake",
        "split_seed": 3,
    },
    "image_folder": {
        "root": "scripts",
        "ways": 3,
        "shots": 2,
        "query_shots": 1,
        "image_size": 8,
        "mode": "L",
        "invert": True,
        "rotations": True,
        "classes_from": "group",
        "fractions": [0.5, 0.25, 0.25],
        "split_seed": 7,
    },
}
# What the task of each source dumped before the options added later, as studies and exported
# learners store it.
STORED = [
    {"source": "sinusoid", "shots": 10, "query_points": 10},
    {
        "source": "omniglot",
        "ways": 20,
        "shots": 1,
        "query_shots": 5,
        "image_size": 28,
        "rotations": True,
        "split": "lake",
        "classes_from": "alphabet",
    },
    {
        "source": "omniglot",
        "ways": 5,
        "shots": 1,
        "query_shots": 15,
        "image_size": 28,
        "rotations": True,
        "split": "vinyals",
    },
    {
        "source": "image_folder",
        "root": "path/to/your/classes",
        "ways": 5,
        "shots": 1,
        "query_shots": 5,
        "image_size": 28,
        "mode": "RGB",
    },
]


def png(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade % 256, (7 * shade) % 256, (13 * shade) % 256)).save(path)


def fake_omniglot(data: Path) -> None:
    """Omniglot's layout, small: 4 background alphabets of 40 characters (so that the lake
    split holds 3 out for validation) and 1 evaluation alphabet of 10, 3 drawings each."""
    folder = data / "omniglot" / "omniglot-py"
    shade = 0
    for subset, alphabets, characters in (
        ("images_background", 4, 40),
        ("images_evaluation", 1, 10),
    ):
        for a in range(alphabets):
            for c in range(characters):
                for d in range(3):
                    shade += 1
                    png(folder / subset / f"alphabet{a}" / f"character{c:02d}" / f"{d}.png", shade)


def grouped_classes(root: Path, groups: int, classes: int, images: int = 3) -> None:
    """``root/<group>/<class>/<image>``; with ``groups`` 0, ``root/<class>/<image>``."""
    for g in range(max(groups, 1)):
        for c in range(classes):
            for i in range(images):
                group = f"group{g}/" if groups else ""
                png(root / f"{group}class{c:02d}" / f"{i}.png", 1000 * g + 10 * c + i)


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("METASEARCH_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data"
    fake_omniglot(data)
    grouped_classes(data / "scripts", groups=4, classes=10)
    return data


def study_file(tmp_path: Path, task: dict[str, Any]) -> Path:
    study = {"name": "options", "task": task, "space": str(ROOT / "search_spaces" / "mlp.yaml")}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def from_study(tmp_path: Path, data: Path, source: str) -> TaskSource:
    config = load_study_file(study_file(tmp_path, {"source": source, **OPTIONS[source]}))
    return build_source(config, data_root=data, device="cpu")


def from_python(data: Path, source: str) -> TaskSource:
    options = dict(OPTIONS[source])
    if source == "sinusoid":
        return SinusoidSource(**options)
    if source == "omniglot":
        return omniglot(data, **options)
    return image_folder(data / options.pop("root"), **options)


def observed(source: TaskSource, data: Path) -> dict[str, Any]:
    """The settings the built source really has, by option name."""
    if isinstance(source, SinusoidSource):
        return {
            "shots": source.shots,
            "query_points": source.query_points,
            **{k: list(getattr(source, k)) for k in ("amplitude", "phase", "x_range")},
        }
    assert isinstance(source, ClassificationSource)
    described, transform = source.describe(), source.input_transform()
    sizes = [source.split_classes[s].numel() for s in SPLITS]
    return {
        "ways": source.ways,
        "shots": source.shots,
        "query_shots": source.query_shots,
        "image_size": source.input_shape[-1],
        "mode": transform["mode"],
        "invert": transform["invert"],
        "rotations": source.n_classes("train") == 4 * sizes[0],
        "rotate_held_out": source.n_classes("val") == 4 * sizes[1],
        "classes_from": source.classes_from,
        "split": described.get("split"),
        "split_seed": described["split_seed"],
        "fractions": [n / sum(sizes) for n in sizes],
        "root": str(Path(described["root"]).relative_to(data)) if "root" in described else None,
    }


@pytest.mark.parametrize("source", MODELS)
def test_the_cases_set_every_option_of_every_source_away_from_its_default(source: str) -> None:
    fields = MODELS[source].model_fields
    assert set(OPTIONS[source]) == set(fields) - {"source"}
    base = {"source": source, "root": "elsewhere"} if "root" in fields else {"source": source}
    for name, value in OPTIONS[source].items():
        assert parse_task(base | {name: value}) != parse_task(base), name


@pytest.mark.slow
@pytest.mark.parametrize("source", MODELS)
def test_every_option_goes_from_the_study_file_to_the_built_source(
    source: str, tmp_path: Path, data: Path
) -> None:
    built = from_study(tmp_path, data, source)
    seen = observed(built, data)
    assert {name: seen[name] for name in OPTIONS[source]} == OPTIONS[source]
    if isinstance(built, ClassificationSource):  # beyond what describe() says:
        unseeded = {**OPTIONS[source], "split_seed": 0}
        other = build_task_source({"source": source, **unseeded}, data)
        assert isinstance(other, ClassificationSource)
        assert any(not torch.equal(built.split_classes[s], other.split_classes[s]) for s in SPLITS)
        if source == "omniglot":  # lake: the evaluation alphabet is the test split
            assert built.split_classes["test"].tolist() == list(range(160, 170))
        else:
            plain = build_task_source({"source": source, **OPTIONS[source], "invert": False}, data)
            assert isinstance(plain, ClassificationSource)
            assert torch.equal(built.images, 255 - plain.images)
    else:
        batch = built.sample("train", 200, torch.Generator().manual_seed(0))
        assert batch.support_x.min() >= -1.0 and batch.support_x.max() < 1.0
        assert batch.support_y.abs().max() <= 2.0 and batch.support_y.abs().max() > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("source", MODELS)
def test_the_python_factory_and_the_study_file_build_the_same_source(
    source: str, tmp_path: Path, data: Path
) -> None:
    study, python = from_study(tmp_path, data, source), from_python(data, source)
    assert study.describe() == python.describe()
    assert study.input_transform() == python.input_transform()
    if isinstance(study, ClassificationSource):
        assert isinstance(python, ClassificationSource)
        assert torch.equal(study.images, python.images)
        assert all(torch.equal(study.split_classes[s], python.split_classes[s]) for s in SPLITS)
    for split in SPLITS:
        a, b = (s.sample(split, 3, torch.Generator().manual_seed(1)) for s in (study, python))
        assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.parametrize("source", MODELS)
def test_an_unknown_option_is_one_line_naming_the_allowed_ones(
    source: str, tmp_path: Path, data: Path
) -> None:
    allowed = [name for name in MODELS[source].model_fields if name != "source"]
    task = {"source": source, **OPTIONS[source], "wayz": 5}
    with pytest.raises(SpecError) as from_file:
        load_study_file(study_file(tmp_path, task))
    with pytest.raises(SpecError) as from_python_call:
        if source == "sinusoid":
            SinusoidSource(wayz=5)
        elif source == "omniglot":
            omniglot(data, wayz=5)
        else:
            image_folder(data / "scripts", wayz=5)
    for error in (from_file, from_python_call):
        message = str(error.value)
        assert "\n" not in message
        assert f"unknown option wayz for source {source}; allowed: {', '.join(allowed)}" in message


def test_a_split_with_too_few_classes_says_what_each_split_has_and_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METASEARCH_CACHE", str(tmp_path / "cache"))
    grouped_classes(tmp_path / "thirty", groups=0, classes=30, images=2)
    expected = (
        "split 'val' has 4 classes but a 5-way task needs 5 (classes per split: train 21, val 4, "
        "test 5); the folder has 30 usable classes split by fractions (0.7, 0.15, 0.15): add "
        "classes, lower ways or change task.fractions"
    )
    with pytest.raises(DataError) as error:
        image_folder(tmp_path / "thirty", ways=5, shots=1, query_shots=1, image_size=8)
    assert str(error.value) == expected
    fits = image_folder(tmp_path / "thirty", shots=1, query_shots=1, fractions=(0.5, 0.25, 0.25))
    assert [fits.n_classes(s) for s in SPLITS] == [15, 8, 7]


@pytest.mark.parametrize("stored", STORED, ids=lambda task: task["source"])
def test_a_task_stored_before_the_new_options_reads_and_dumps_as_it_was(
    stored: dict[str, Any],
) -> None:
    """A study compares its stored task with the study file's, and an exported learner rebuilds
    its source from it: both keep working."""
    assert parse_task(stored).model_dump(mode="json") == stored


def test_new_options_dump_once_set() -> None:
    task = parse_task(STORED[-1] | {"invert": True, "fractions": [0.6, 0.2, 0.2]})
    assert task.model_dump(mode="json") == STORED[-1] | {
        "invert": True,
        "fractions": [0.6, 0.2, 0.2],
    }


@pytest.mark.parametrize(
    ("task", "words"),
    [
        ({"source": "image_folder", "root": "x", "fractions": [0.5, 0.5, 0.5]}, "sum to 1"),
        ({"source": "image_folder", "root": "x", "fractions": [1.2, -0.1, -0.1]}, ">= 0"),
        ({"source": "sinusoid", "x_range": [1.0, -1.0]}, "low <= high"),
        ({"source": "omniglot", "split_seed": "x"}, "split_seed"),
    ],
)
def test_bad_option_values_are_refused_with_the_option_named(
    task: dict[str, Any], words: str
) -> None:
    with pytest.raises(SpecError, match=words) as error:
        parse_task(task)
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_using_an_exported_learner_imports_neither_the_search_nor_optuna() -> None:
    code = (
        "import sys\n"
        "import metasearch.tasks, metasearch.export, metasearch.commands.learners\n"
        "print(sorted(m for m in sys.modules\n"
        "             if m.startswith('metasearch.search') or m.split('.')[0] == 'optuna'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
