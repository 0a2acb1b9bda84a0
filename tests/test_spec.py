"""The learner spec: round trips, defaults and clear errors for bad values."""

from __future__ import annotations

import json

import pytest

from metasearch import registry
from metasearch.errors import SpecError
from metasearch.spec import LearnerSpec


def test_round_trips_through_json() -> None:
    spec = LearnerSpec.from_dict(
        {
            "architecture": {"widths": [16, 32, 64], "normalization": "layer", "pooling": "avg"},
            "init": {"scheme": "orthogonal", "gain": 0.5, "zero_head": True},
            "inner": {"steps": 3, "granularity": "per_layer_per_step", "learned": True},
            "outer": {"algorithm": "mamlpp", "meta_batch_size": 4},
        }
    )
    again = LearnerSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.architecture.widths == (16, 32, 64)


@pytest.mark.parametrize(
    "data, field, hint",
    [
        ({"outer": {"algorithm": "mammal"}}, "outer.algorithm", "'maml'"),
        ({"architecture": {"pooling": "huge"}}, "architecture.pooling", "'strided'"),
        ({"architecture": {"depth": 4}}, "architecture.depth", "unknown field"),
        ({"architecture": {"widths": []}}, "architecture.widths", "at least one block"),
        ({"inner": {"lr": -1}}, "inner.lr", "> 0"),
        ({"outer": {"precision": "float16"}}, "outer.precision", "'float32' or 'bfloat16'"),
        ({"inner": {"steps": 1000}}, "inner.steps", "between 0 and 100"),
        ({"outer": {"algorithm": "metasgd"}}, "", "set inner.learned"),
        ({"outer": {"algorithm": "protonet"}}, "", "inner.steps to 0"),
        ({"outer": {"algorithm": "reptile"}, "inner": {"learned": True}}, "", "learned false"),
        ({"architecture": {"family": "mlp", "normalization": "instance"}}, "", "feature maps"),
    ],
)
def test_bad_values_name_the_field_and_the_fix(data: dict, field: str, hint: str) -> None:
    with pytest.raises(SpecError) as error:
        LearnerSpec.from_dict(data)
    message = str(error.value)
    assert field in message and hint in message
    assert "\n" not in message


def test_every_algorithm_has_a_valid_spec() -> None:
    for algorithm in registry.registered():
        data: dict = {"outer": {"algorithm": algorithm.name}}
        for field, value in algorithm.requires.items():  # type: ignore[attr-defined]
            section, name = field.split(".")
            data.setdefault(section, {})[name] = value
        assert LearnerSpec.from_dict(data).outer.algorithm == algorithm.name


def test_specs_are_immutable() -> None:
    with pytest.raises(Exception, match="frozen"):
        LearnerSpec().inner.steps = 3  # type: ignore[misc]
