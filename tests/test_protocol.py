"""Meta-test protocols: which held-out tasks a reported score averages over."""

from __future__ import annotations

import pytest
import torch

from metasearch import SinusoidSource, SpecError
from metasearch.evaluation import Protocol
from metasearch.tasks import ClassificationSource

SIZE = 4


def source(name: str = "omniglot", **settings: object) -> ClassificationSource:
    """24 classes of 5 images whose pixels tell class and example apart; square, so rotatable."""
    images = torch.stack(
        [
            torch.full((1, SIZE, SIZE), 10 * c + e, dtype=torch.uint8)
            for c in range(24)
            for e in range(5)
        ]
    )
    images[:, :, 0, 0] = 255  # a corner marks how an image is turned
    splits = {"train": range(12), "val": range(12, 18), "test": range(18, 24)}
    return ClassificationSource(
        images,
        torch.arange(24) * 5,
        torch.full((24,), 5),
        splits,
        ways=5,
        shots=1,
        query_shots=2,
        class_groups=torch.arange(24) // 6,
        group_kind="alphabet",
        name=name,
        **settings,
    )


def upright(x: torch.Tensor) -> torch.Tensor:
    """Whether each image ``[..., 1, SIZE, SIZE]`` has its marked corner at the top left."""
    return x[..., 0, 0, 0] == 1.0


def test_the_default_protocol_never_rotates_held_out_classes() -> None:
    rotated = source(rotations=True, rotate_held_out=True)
    view = Protocol().source(rotated)
    batch = view.sample("test", 100, torch.Generator().manual_seed(0))
    assert upright(batch.support_x).all() and upright(batch.query_x).all()
    assert Protocol().describe(view) == {
        "name": "unrotated",
        "tasks": 600,
        "seed": 20170309,
        "ways": 5,
        "shots": 1,
        "rotations": False,
        "classes_from": "any",
    }
    train = view.sample("train", 100, torch.Generator().manual_seed(0))
    assert not upright(train.support_x).all()  # training keeps its augmentation


def test_the_vinyals_protocol_rotates_test_classes_across_alphabets() -> None:
    within = source(classes_from="alphabet")
    vinyals = Protocol("vinyals", tasks=50)
    view = vinyals.source(within)
    batch = view.sample("test", 200, torch.Generator().manual_seed(0))
    assert 0.15 < upright(batch.support_x).double().mean() < 0.35
    assert vinyals.describe(view) == {
        "name": "vinyals",
        "tasks": 50,
        "seed": 20170309,
        "ways": 5,
        "shots": 1,
        "rotations": True,
        "classes_from": "any",
    }
    assert "Vinyals et al., 2016" in vinyals.summary(view)
    assert "one alphabet" in Protocol(classes_from="alphabet").summary(within)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Protocol("paper"), "unknown meta-test protocol 'paper'; choose unrotated"),
        (lambda: Protocol("vinyals", classes_from="alphabet"), "drop classes_from"),
        (lambda: Protocol("vinyals").source(source("images")), "Omniglot's, not images's"),
        (lambda: Protocol(classes_from="script").source(source()), "any or alphabet"),
        (lambda: Protocol("vinyals").source(SinusoidSource()), "regression tasks have no classes"),
    ],
)
def test_protocols_refuse_what_does_not_apply(make: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        make()  # type: ignore[operator]
