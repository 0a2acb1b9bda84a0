"""Task sources: sinusoid regression, class-disjoint image classification, folders and Omniglot."""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from metasearch.errors import DataError
from metasearch.tasks import (
    SPLITS,
    ClassificationSource,
    SinusoidSource,
    TaskBatch,
    TaskSource,
    image_folder,
    omniglot,
)
from metasearch.tasks import images as images_module

SIZE = 4  # synthetic images are SIZE x SIZE
GRADIENT = torch.arange(SIZE * SIZE, dtype=torch.uint8).view(SIZE, SIZE)
QUARTER_TURNS = torch.stack([torch.rot90(GRADIENT, k) for k in range(4)])
COUNTS = [4 + (5 * c) % 9 for c in range(24)]  # 4 to 12 images per class
SPLIT_CLASSES = {"train": range(12), "val": range(12, 18), "test": range(18, 24)}


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same_batch(a: TaskBatch, b: TaskBatch) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# Sinusoid regression


def sinusoid_fit(batch: TaskBatch) -> tuple[Tensor, Tensor, Tensor]:
    """Fits ``a sin(x) + b cos(x)`` to each support set: amplitude, phase, query predictions."""

    def features(x: Tensor) -> Tensor:
        return torch.cat([torch.sin(x.double()), torch.cos(x.double())], dim=-1)

    coef = torch.linalg.lstsq(features(batch.support_x), batch.support_y.double()).solution
    # A sin(x - phase) = A cos(phase) sin(x) - A sin(phase) cos(x)
    a, b = coef[:, 0, 0], coef[:, 1, 0]
    return torch.hypot(a, b), torch.atan2(-b, a), features(batch.query_x) @ coef


def test_sinusoid_shapes() -> None:
    batch = SinusoidSource(shots=7, query_points=9).sample("train", 16, seeded(0))
    assert [tuple(t.shape) for t in batch] == [(16, 7, 1), (16, 7, 1), (16, 9, 1), (16, 9, 1)]
    assert batch.n_tasks == 16 and all(t.dtype == torch.float32 for t in batch)


def test_sinusoid_support_and_query_share_one_function_in_range() -> None:
    batch = SinusoidSource().sample("train", 1000, seeded(1))
    amplitude, phase, prediction = sinusoid_fit(batch)
    assert torch.allclose(prediction, batch.query_y.double(), atol=1e-5)
    assert 0.1 - 1e-4 <= amplitude.min() < 0.3 and 4.7 < amplitude.max() <= 5 + 1e-4
    assert -1e-4 <= phase.min() < 0.1 and math.pi - 0.1 < phase.max() <= math.pi + 1e-4
    x = torch.cat([batch.support_x, batch.query_x], dim=1)
    assert -5 <= x.min() < -4.9 and 4.9 < x.max() <= 5
    assert torch.cat([batch.support_y, batch.query_y], dim=1).abs().max() <= 5


def test_sinusoid_splits_draw_different_functions_from_one_seed() -> None:
    source = SinusoidSource()
    val, again = source.sample("val", 50, seeded(3)), source.sample("val", 50, seeded(3))
    test = source.sample("test", 50, seeded(3))
    assert torch.equal(val.support_y, again.support_y)
    val_amplitude, _, _ = sinusoid_fit(val)
    test_amplitude, _, _ = sinusoid_fit(test)
    assert (val_amplitude - test_amplitude).abs().min() > 1e-4


# Classification on synthetic images that say where they came from


class Decoded(NamedTuple):
    """Per image of a batch: its class, its position in the class and its quarter turns."""

    classes: Tensor
    examples: Tensor
    turns: Tensor


def synthetic_images(counts: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Images, offsets, counts; channel 0 holds the class, 1 the example, 2 an asymmetric ramp."""
    images = torch.stack(
        [
            torch.stack([torch.full_like(GRADIENT, c), torch.full_like(GRADIENT, e), GRADIENT])
            for c, n in enumerate(counts)
            for e in range(n)
        ]
    )
    class_counts = torch.tensor(counts)
    return images, class_counts.cumsum(0) - class_counts, class_counts


def make_source(
    counts: list[int] = COUNTS, splits: dict[str, Any] = SPLIT_CLASSES, **settings: Any
) -> ClassificationSource:
    settings = {"ways": 5, "shots": 1, "query_shots": 3, **settings}
    return ClassificationSource(*synthetic_images(counts), splits, **settings)


def decode(x: Tensor) -> Decoded:
    """Reads back class, example and rotation from images ``[..., 3, SIZE, SIZE]`` in [0, 1]."""
    pixels = (x * 255).round().to(torch.uint8)
    match = (pixels[..., 2, None, :, :] == QUARTER_TURNS).flatten(-2).all(-1)  # [..., 4]
    assert torch.all(match.sum(-1) == 1), "an image is no quarter turn of a synthetic image"
    return Decoded(pixels[..., 0, 0, 0].long(), pixels[..., 1, 0, 0].long(), match.int().argmax(-1))


def sample_decoded(
    source: ClassificationSource, split: str, n_tasks: int, seed: int = 0
) -> tuple[TaskBatch, Decoded, Tensor]:
    """A batch, what each of its images (support then query) shows, and their labels."""
    batch = source.sample(split, n_tasks, seeded(seed))
    labels = torch.cat([batch.support_y, batch.query_y], dim=1)
    return batch, decode(torch.cat([batch.support_x, batch.query_x], dim=1)), labels


def check_tasks(source: ClassificationSource, split: str, n_tasks: int = 100) -> Decoded:
    """Samples tasks of ``split`` and asserts every property a task must have."""
    batch, seen, labels = sample_decoded(source, split, n_tasks)
    ways, shots, query_shots = source.ways, source.shots, source.query_shots
    assert batch.support_x.shape == (n_tasks, ways * shots, 3, SIZE, SIZE)
    assert batch.query_x.shape == (n_tasks, ways * query_shots, 3, SIZE, SIZE)
    for y, per_label in ((batch.support_y, shots), (batch.query_y, query_shots)):
        assert torch.all(torch.stack([t.bincount(minlength=ways) for t in y]) == per_label)
    assert set(seen.classes.unique().tolist()) <= set(SPLIT_CLASSES[split])
    assert torch.all(seen.examples < torch.tensor(COUNTS)[seen.classes])
    if source.n_classes(split) == len(SPLIT_CLASSES[split]):  # not rotated
        assert torch.all(seen.turns == 0)
    rotated_class = seen.classes * 4 + seen.turns  # each rotation is a class of its own
    for keys, examples, y in zip(rotated_class, seen.examples, labels):
        per_label = [set(keys[y == label].tolist()) for label in range(ways)]
        assert all(len(classes) == 1 for classes in per_label), "a label mixes classes"
        assert len(set.union(*per_label)) == ways, "a task repeats a class"
        assert len(set(zip(keys.tolist(), examples.tolist()))) == len(keys), "an image repeats"
    return seen


@pytest.mark.parametrize(
    ("settings", "rotated"),
    [
        ({}, ()),
        ({"rotations": True}, ("train",)),
        ({"rotations": True, "rotate_held_out": True}, SPLITS),
    ],
    ids=["unrotated", "train-rotations", "vinyals"],
)
@pytest.mark.parametrize("split", SPLITS)
def test_tasks_stay_in_their_split_with_distinct_classes_and_images(
    split: str, settings: dict[str, Any], rotated: tuple[str, ...]
) -> None:
    source = make_source(**settings)
    seen = check_tasks(source, split)
    assert set(seen.classes.unique().tolist()) == set(SPLIT_CLASSES[split])  # all get drawn
    assert set(seen.turns.unique().tolist()) == ({0, 1, 2, 3} if split in rotated else {0})
    assert source.n_classes(split) == len(SPLIT_CLASSES[split]) * (4 if split in rotated else 1)


def test_labels_are_permuted_afresh_for_every_task() -> None:
    _, seen, labels = sample_decoded(make_source(), "train", 300)
    labels_of: defaultdict[int, set[int]] = defaultdict(set)
    for c, y in zip(seen.classes.flatten().tolist(), labels.flatten().tolist()):
        labels_of[c].add(y)
    assert len(labels_of) == 12 and all(ys == set(range(5)) for ys in labels_of.values())


def test_rotated_classes_are_exact_quarter_turns_of_the_originals() -> None:
    source = make_source(rotations=True)
    batch, seen, _ = sample_decoded(source, "train", 50)
    x = torch.cat([batch.support_x, batch.query_x], dim=1)
    originals = source.images[source.class_offsets[seen.classes] + seen.examples].float() / 255
    for k in range(4):
        turned = seen.turns == k
        assert turned.any()
        assert torch.equal(x[turned], torch.rot90(originals[turned], k, dims=(-2, -1)))


@pytest.mark.parametrize("split", ["val", "test"])
def test_training_rotations_leave_held_out_images_as_stored(split: str) -> None:
    source = make_source(rotations=True)
    batch, seen, _ = sample_decoded(source, split, 50)
    x = torch.cat([batch.support_x, batch.query_x], dim=1)
    stored = source.images[source.class_offsets[seen.classes] + seen.examples].float() / 255
    assert torch.equal(x, stored)
    assert source.describe()["rotations"] and not source.describe()["held_out_rotations"]
    vinyals = source.with_sampling(rotate_held_out=True)
    assert vinyals.images is source.images and vinyals.n_classes(split) == 4 * source.n_classes(
        split
    )
    batch, seen, _ = sample_decoded(vinyals, split, 50)
    assert set(seen.turns.unique().tolist()) == {0, 1, 2, 3}


def test_unequal_classes_are_drawn_whole_and_never_past_their_end() -> None:
    """Every image of every class turns up in support sets and in query sets, nothing else does."""
    counts = [4, 30, 4, 17, 5, 4, 4, 4, 4, 4]
    splits = {"train": range(6), "val": [6, 7], "test": [8, 9]}
    batch, seen, labels = sample_decoded(make_source(counts, splits, ways=2), "train", 1000)
    for keys, y in zip(seen.classes, labels):
        assert all(keys[y == label].unique().numel() == 1 for label in range(2))
    every_image = {(c, e) for c in range(6) for e in range(counts[c])}
    n_support = batch.support_x.shape[1]
    for part in (slice(None, n_support), slice(n_support, None)):
        classes, examples = seen.classes[:, part].flatten(), seen.examples[:, part].flatten()
        assert set(zip(classes.tolist(), examples.tolist())) == every_image


def test_with_episodes_samples_another_shape_from_the_same_tensors() -> None:
    source = make_source(rotations=True)
    wide = source.with_episodes(ways=6, query_shots=2)
    assert (wide.ways, wide.shots, wide.query_shots, wide.n_outputs) == (6, 1, 2, 6)
    assert (source.ways, source.query_shots, source.n_outputs) == (5, 3, 5)  # left as it was
    assert wide.images is source.images and wide.class_offsets is source.class_offsets
    check_tasks(wide, "train")
    check_tasks(source.with_episodes(shots=2, query_shots=2), "val")
    with pytest.raises(DataError, match=r"'train' has a class with 4 images"):
        source.with_episodes(shots=2, query_shots=3)
    with pytest.raises(ValueError, match="ways >= 2"):
        source.with_episodes(ways=1)


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": range(6), "val": range(5, 11), "test": range(12, 18)}, "shares classes"),
        ({"train": [0, 0, 1, 2, 3, 4], "val": range(6, 12), "test": range(12, 18)}, "distinct"),
        ({"train": range(6), "val": range(6, 12), "test": [12, 99]}, r"distinct .* \[0, 24\)"),
    ],
)
def test_bad_splits_raise_value_error(splits: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_source(splits=splits)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"images": torch.zeros(4, 1, SIZE, SIZE)}, "uint8"),
        ({"ways": 1}, "ways >= 2"),
        ({"query_shots": 0}, "query_shots >= 1"),
        ({"rotations": True, "images": torch.zeros(4, 1, 2, 3, dtype=torch.uint8)}, "square"),
    ],
)
def test_bad_settings_raise_value_error(settings: dict[str, Any], match: str) -> None:
    images, offsets, counts = synthetic_images([1, 1, 1, 1])
    arguments = {"images": images, "ways": 2, "shots": 1, "query_shots": 1, **settings}
    splits = {"train": [0, 1], "val": [2], "test": [3]}
    with pytest.raises(ValueError, match=match):
        ClassificationSource(class_offsets=offsets, class_counts=counts, splits=splits, **arguments)


def test_too_few_classes_is_a_data_error_unless_rotations_make_up_for_it() -> None:
    splits = {"train": [0, 1], "val": range(12, 18), "test": range(18, 24)}
    with pytest.raises(
        DataError,
        match=r"'train' has 2 classes but a 5-way task needs 5 "
        r"\(classes per split: train 2, val 6, test 6\); lower ways",
    ):
        make_source(splits=splits)
    assert make_source(splits=splits, rotations=True).n_classes("train") == 8
    held_out = {"train": range(12), "val": range(12, 18), "test": [18, 19]}
    with pytest.raises(
        DataError,
        match=r"'test' has 2 classes but a 5-way task needs 5 \(.*train 48, val 6, test 2\)",
    ):
        make_source(splits=held_out, rotations=True)  # training rotations do not reach test
    assert make_source(splits=held_out, rotate_held_out=True).n_classes("test") == 8


# Tasks within one group: classes 0-4 form group 0, 5-9 group 1 and so on. With 3-way tasks, the
# train split (0-11) can host them in groups 0 and 1 (group 2 holds only 10 and 11), val (12-17)
# in groups 2 and 3, and test (18-23) in group 4 alone.
GROUPS = torch.arange(24) // 5
HOSTS = {"train": {0, 1}, "val": {2, 3}, "test": {4}}


def grouped_source(**settings: Any) -> ClassificationSource:
    return make_source(ways=3, class_groups=GROUPS, classes_from="group", **settings)


@pytest.mark.parametrize("split", SPLITS)
def test_grouped_tasks_draw_every_class_from_one_group_that_can_host_them(split: str) -> None:
    source = grouped_source()
    seen = check_tasks(source, split, n_tasks=400)
    groups = GROUPS[seen.classes]  # [T, images]
    assert torch.all(groups == groups[:, :1]), "a task mixes groups"
    assert set(groups[:, 0].tolist()) == HOSTS[split]
    hosted = {c for c in SPLIT_CLASSES[split] if int(GROUPS[c]) in HOSTS[split]}
    assert set(seen.classes.unique().tolist()) == hosted
    assert source.describe()["classes_from"] == "group"


def test_groups_are_picked_in_proportion_to_their_classes() -> None:
    """With rotations, train's group 2 (classes 10, 11) hosts 8 classes against 20 in groups
    0 and 1 each, so it should host 8/48 of the tasks."""
    source = grouped_source(rotations=True)
    _, seen, _ = sample_decoded(source, "train", 3000)
    shares = GROUPS[seen.classes[:, 0]].bincount(minlength=3).double() / 3000
    expected = torch.tensor([20, 20, 8], dtype=torch.double) / 48
    assert torch.allclose(shares, expected, atol=0.03), shares


def test_grouped_tasks_depend_only_on_the_seed_and_any_is_unchanged() -> None:
    source = grouped_source()
    assert same_batch(source.sample("val", 20, seeded(3)), source.sample("val", 20, seeded(3)))
    mixed = source.with_sampling(classes_from="any")
    plain = make_source(ways=3)
    assert same_batch(mixed.sample("train", 20, seeded(3)), plain.sample("train", 20, seeded(3)))


def test_a_view_keeps_its_lenient_splits_on_another_device() -> None:
    wide = grouped_source().with_episodes(ways=5, splits=["train"])  # val, test: no group of 5
    with pytest.raises(DataError, match="no group of split 'val' has the 5 classes"):
        wide.sample("val", 1, seeded(0))
    moved = wide.to("meta")
    assert moved.images.device.type == "meta" and wide.images.device.type == "cpu"
    assert moved.split_classes["train"].device.type == "meta" and moved.ways == 5
    with pytest.raises(DataError, match="no group of split 'test' has the 5 classes"):
        moved.sample("test", 1, seeded(0))


def test_a_split_without_a_group_that_can_host_a_task_is_a_data_error() -> None:
    message = r"no group of split 'val' has the 4 classes .* 2 groups has 3; .* classes_from: any"
    with pytest.raises(DataError, match=message):
        make_source(ways=4, class_groups=GROUPS, classes_from="group")
    with pytest.raises(ValueError, match="needs class_groups"):
        make_source(classes_from="group")


def test_too_few_images_is_a_data_error_that_says_what_to_do() -> None:
    with pytest.raises(DataError, match=r"'train' has a class with 4 images.*lower query_shots"):
        make_source(query_shots=4)


def test_unknown_split_is_refused() -> None:
    for source in (SinusoidSource(), make_source()):
        with pytest.raises(ValueError, match="unknown split"):
            source.sample("holdout", 2, seeded(0))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "source", [SinusoidSource(), make_source(rotations=True)], ids=["sinusoid", "images"]
)
def test_held_out_tasks_depend_only_on_the_seed(source: TaskSource) -> None:
    first = source.sample("test", 20, seeded(7))
    assert same_batch(first, source.sample("test", 20, seeded(7)))
    assert not same_batch(first, source.sample("test", 20, seeded(8)))


# Image folders


def colour(c: int, e: int) -> tuple[int, int, int]:
    """The solid colour of image ``e`` of class ``c``: both can be read back."""
    return 10 + 20 * c, 10 + 40 * e, 100


def expected_images(mode: str, size: int) -> Tensor:
    """What the 12 usable classes should load as, class by class."""
    solid = [Image.new("RGB", (size, size), colour(c, e)) for c in range(12) for e in range(6)]
    pixels = np.stack([np.asarray(image.convert(mode)).reshape(size, size, -1) for image in solid])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)


@pytest.fixture
def image_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """12 classes of 6 images, one class of 2 and stray files; the cache goes under tmp_path."""
    monkeypatch.setenv("METASEARCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "images"
    images = {f"class{c:02d}/{e}.png": colour(c, e) for c in range(12) for e in range(6)}
    images |= {"tiny/0.png": (0, 0, 255), "tiny/1.png": (0, 0, 255)}
    for name, rgb in images.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 9), rgb).save(root / name)
    (root / "notes.txt").write_text("not a class")
    (root / "class00" / "labels.csv").write_text("not an image")
    return root


def load_folder(root: Path, **settings: Any) -> ClassificationSource:
    settings = {"ways": 2, "shots": 1, "query_shots": 3, "image_size": 8, **settings}
    return image_folder(root, **settings)


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3)])
def test_image_folder_loads_usable_classes_into_disjoint_splits(
    image_root: Path, mode: str, channels: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        source = load_folder(image_root, mode=mode)
    assert "left out 1 of 13 classes with fewer than 4 images" in caplog.text
    assert source.input_shape == (channels, 8, 8) and source.input_transform()["mode"] == mode
    assert torch.equal(source.images, expected_images(mode, 8))  # no tiny class, in order
    assert source.class_counts.tolist() == [6] * 12
    splits = [set(source.split_classes[s].tolist()) for s in SPLITS]
    assert [len(s) for s in splits] == [8, 2, 2] and set.union(*splits) == set(range(12))
    batch = source.sample("val", 3, seeded(0))
    assert batch.support_x.shape == (3, 2, channels, 8, 8)
    assert batch.query_x.shape == (3, 6, channels, 8, 8)


def test_image_folder_invert_flips_pixels(image_root: Path) -> None:
    plain, inverted = (load_folder(image_root, mode="L", invert=flag) for flag in (False, True))
    assert torch.equal(inverted.images, 255 - plain.images)
    assert inverted.input_transform()["invert"]


def test_image_folder_caches_decoded_images(
    image_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = load_folder(image_root)
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 1
    load_folder(image_root, image_size=10)  # other settings, another cache entry
    assert len(list((tmp_path / "cache").iterdir())) == 2  # and no partial file left over

    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded an image despite the cache")

    monkeypatch.setattr(images_module, "load_image", no_decoding)
    again = load_folder(image_root)
    for name in ("images", "class_offsets", "class_counts"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert same_batch(first.sample("train", 4, seeded(1)), again.sample("train", 4, seeded(1)))


def test_image_folder_cache_notices_an_edited_image(image_root: Path) -> None:
    before = load_folder(image_root)
    edited = image_root / "class03" / "2.png"
    mtime = edited.stat().st_mtime_ns
    Image.new("RGB", (12, 9), (1, 2, 3)).save(edited)  # a PNG of the very same byte size
    os.utime(edited, ns=(mtime + 10**9, mtime + 10**9))
    after = load_folder(image_root)
    changed = (before.images != after.images).flatten(1).any(1).nonzero().flatten().tolist()
    assert changed == [3 * 6 + 2] and after.images[20].unique().tolist() == [1, 2, 3]


def test_image_folder_errors_name_the_folder(image_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(DataError, match=f"{missing} does not exist"):
        image_folder(missing)
    with pytest.raises(DataError, match=f"no class folder under {image_root} holds 21 images"):
        image_folder(image_root, shots=1, query_shots=20)


def grouped_root(tmp_path: Path) -> Path:
    """root/<group>/<class>/<image>: 4 groups of 6 classes of 4 solid images; red is the group,
    green the class within it."""
    root = tmp_path / "grouped"
    for g in range(4):
        for c in range(6):
            for e in range(4):
                path = root / f"group{g}" / f"class{c}" / f"{e}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (8, 8), (40 + 50 * g, 30 * c, 10 * e)).save(path)
    return root


def test_image_folder_groups_draw_every_task_from_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METASEARCH_CACHE", str(tmp_path / "cache"))
    root = grouped_root(tmp_path)
    source = load_folder(root, classes_from="group", fractions=(0.5, 0.25, 0.25))
    assert source.class_counts.tolist() == [4] * 24 and source.describe()["classes_from"] == "group"
    assert source.class_groups.tolist() == [g for g in range(4) for _ in range(6)]
    splits = [set(source.split_classes[s].tolist()) for s in SPLITS]
    assert [len(s) for s in splits] == [12, 6, 6] and set.union(*splits) == set(range(24))
    for split in SPLITS:
        batch = source.sample(split, 200, seeded(0))
        x = torch.cat([batch.support_x, batch.query_x], dim=1)
        pixels = (x[..., 0, 0] * 255).round().long()  # [T, images, RGB]
        group, member = (pixels[..., 0] - 40) // 50, pixels[..., 1] // 30
        assert torch.all(group == group[:, :1]), "a task mixes groups"
        classes = set((group * 6 + member).unique().tolist())
        assert classes <= splits[SPLITS.index(split)]
    with pytest.raises(
        DataError, match=r"no class folder .* expected root/<group>/<class>/<image>"
    ):
        load_folder(root / "group0", classes_from="group")


# Omniglot


def test_omniglot_missing_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataError, match="METASEARCH_DATA") as error:
        omniglot(tmp_path)
    assert str(tmp_path / "omniglot" / "omniglot-py") in str(error.value)
    assert "download=True" in str(error.value)
    monkeypatch.setenv("METASEARCH_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(DataError, match="elsewhere"):
        omniglot()


@pytest.mark.data
def test_omniglot_vinyals_split(omniglot_5way: ClassificationSource) -> None:
    splits = [set(omniglot_5way.split_classes[s].tolist()) for s in SPLITS]
    assert [len(s) for s in splits] == [1100, 100, 423]
    assert set.union(*splits) == set(range(1623))  # disjoint, since the sizes add up to 1623
    assert omniglot_5way.class_counts.tolist() == [20] * 1623
    assert omniglot_5way.n_classes("train") == 4400  # rotations on by default


@pytest.mark.data
def test_omniglot_lake_split_tests_on_the_evaluation_alphabets(data_root: Path) -> None:
    evaluation = data_root / "omniglot" / "omniglot-py" / "images_evaluation"
    assert sum(1 for alphabet in evaluation.iterdir() for _ in alphabet.iterdir()) == 659
    source = omniglot(data_root, ways=5, shots=1, query_shots=5, split="lake")
    train, val, test = (set(source.split_classes[s].tolist()) for s in SPLITS)
    assert test == set(range(964, 1623)) and len(val) >= 100 and len(train) == 964 - len(val)
    assert train | val == set(range(964))
    alphabet = source.class_groups.tolist()
    assert not {alphabet[c] for c in train} & {alphabet[c] for c in val}  # whole alphabets


@pytest.mark.data
def test_omniglot_images_are_bright_strokes_on_dark(omniglot_5way: ClassificationSource) -> None:
    batch = omniglot_5way.sample("test", 8, seeded(0))
    assert batch.support_x.shape == (8, 5, 1, 28, 28) and batch.query_x.shape == (8, 25, 1, 28, 28)
    x = torch.cat([batch.support_x, batch.query_x], dim=1)
    assert x.dtype == torch.float32 and x.min() >= 0 and 0.9 < x.max() <= 1
    assert x.mean() < 0.25 and omniglot_5way.images.float().mean() / 255 < 0.25


def omniglot_alphabets(data_root: Path) -> list[str]:
    """The alphabet of every Omniglot character, in the order of class indices (by subset,
    alphabet and character), read from the folders."""
    folder = data_root / "omniglot" / "omniglot-py"
    return [
        f"{subset}/{alphabet.name}"
        for subset in ("images_background", "images_evaluation")
        for alphabet in sorted((folder / subset).iterdir())
        if alphabet.is_dir()
        for character in sorted(alphabet.iterdir())
        if character.is_dir()
    ]


class StoredImages:
    """Finds sampled images among a source's stored images at each quarter turn."""

    def __init__(self, source: ClassificationSource) -> None:
        n_pixels = math.prod(source.input_shape)
        self.weights = torch.randint(-(2**40), 2**40, (n_pixels,), generator=seeded(0))
        stored = source.images.cpu()
        turned = [self.fingerprint(torch.rot90(stored, k, dims=(-2, -1))) for k in range(4)]
        self.keys, order = torch.cat(turned).sort()
        classes = torch.arange(len(source.class_counts)).repeat_interleave(
            source.class_counts.cpu()
        )
        self.classes = classes.repeat(4)[order]
        self.turns = torch.arange(4).repeat_interleave(len(stored))[order]

    def fingerprint(self, images: Tensor) -> Tensor:
        return (images.flatten(-3).long() * self.weights).sum(-1)

    def find(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The class and quarter turns of every image of ``x [..., C, H, W]`` in [0, 1]."""
        keys = self.fingerprint((x.cpu() * 255).round().to(torch.uint8))
        at = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        assert torch.equal(self.keys[at], keys), "a sampled image is no stored image turned"
        return self.classes[at], self.turns[at]


@pytest.mark.data
def test_omniglot_rotates_training_characters_only_and_draws_within_alphabets(
    omniglot_5way: ClassificationSource, data_root: Path
) -> None:
    alphabet_of = omniglot_alphabets(data_root)
    assert len(set(alphabet_of)) == 50
    within = omniglot_5way.with_sampling(classes_from="alphabet")
    assert within.describe()["classes_from"] == "alphabet"
    stored = StoredImages(omniglot_5way)
    for split in SPLITS:
        members = set(omniglot_5way.split_classes[split].tolist())
        for source, one_alphabet in ((omniglot_5way, False), (within, True)):
            batch = source.sample(split, 200, seeded(1))
            classes, turns = stored.find(torch.cat([batch.support_x, batch.query_x], dim=1))
            assert set(classes.unique().tolist()) <= members
            alphabets = [{alphabet_of[c] for c in task} for task in classes.tolist()]
            if one_alphabet:
                assert all(len(a) == 1 for a in alphabets), "a task mixes alphabets"
            else:
                assert sum(len(a) > 1 for a in alphabets) > 190
            upright = (turns == 0).double().mean().item()
            if split == "train":
                assert 0.15 < upright < 0.4, upright  # a quarter, but for symmetric characters
            else:
                assert upright == 1.0, f"{split} tasks hold rotated images"


@pytest.mark.data
def test_omniglot_20way_within_alphabet_tests_on_evaluation_alphabets(data_root: Path) -> None:
    mixed = omniglot(data_root, ways=20, shots=1, query_shots=1, split="lake")
    source = mixed.with_sampling(classes_from="alphabet")  # validation holds whole alphabets
    alphabet_of = omniglot_alphabets(data_root)
    validation, _ = StoredImages(source).find(source.sample("val", 20, seeded(2)).support_x)
    assert all(len({alphabet_of[c] for c in task}) == 1 for task in validation.tolist())
    batch = source.sample("test", 100, seeded(2))
    classes, turns = StoredImages(source).find(batch.support_x)
    assert torch.all(turns == 0) and torch.all(classes >= 964)
    assert all(len({alphabet_of[c] for c in task}) == 1 for task in classes.tolist())
    assert all(len(set(task)) == 20 for task in classes.tolist())
    assert len({alphabet_of[c] for c in classes[:, 0].tolist()}) > 10  # many alphabets host
