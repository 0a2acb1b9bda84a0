"""Search spaces: shipped spaces sample only valid specs; malformed spaces say what is wrong."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from metasearch import LearnerSpec, SinusoidSource, SpecError, registry
from metasearch.evaluation import check_compatible
from metasearch.learners.networks import build_network
from metasearch.search import SearchSpace, load_space, parse_space, suggest
from metasearch.search.files import read_yaml

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"

SMALL: dict[str, Any] = {
    "name": "small",
    "fixed": {"architecture.family": "mlp"},
    "derived": {
        "inner.learned": {"from": "outer.algorithm", "map": {"metasgd": True, "default": False}},
        "inner.lr": {"from": "outer.algorithm", "map": {"metasgd": 0.05}},
    },
    "dimensions": {
        "outer.algorithm": {"type": "categorical", "choices": ["maml", "metasgd"]},
        "architecture.depth": {"type": "int", "low": 1, "high": 3},
        "architecture.widths": {"type": "int", "low": 8, "high": 32, "log": True},
        "inner.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        "inner.granularity": {
            "type": "categorical",
            "choices": ["scalar", "per_parameter"],
            "when": {"outer.algorithm": "metasgd"},
        },
    },
}


def sample(space: SearchSpace, n: int, seed: int = 0) -> list[tuple[dict, LearnerSpec]]:
    """``n`` random (params, spec) pairs; any error in ``suggest`` fails the test."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    specs = []

    def dry(trial: optuna.Trial) -> float:
        specs.append(suggest(trial, space))
        return 0.0

    study.optimize(dry, n_trials=n)
    return [(trial.params, spec) for trial, spec in zip(study.trials, specs)]


def with_change(path: str, value: Any) -> dict[str, Any]:
    """SMALL with ``value`` set at ``path`` (``section/key[/key...]``); None deletes."""
    data = copy.deepcopy(SMALL)
    *parents, last = path.split("/")
    target = data
    for key in parents:
        target = target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", ["conv", "mlp", "inner_loop"])
def test_shipped_spaces_sample_only_valid_specs(name: str) -> None:
    space = load_space(SPACES / f"{name}.yaml")
    pairs = sample(space, 200)
    for params, spec in pairs:
        assert len(spec.architecture.widths) == params.get("architecture.depth", 4)
        if spec.architecture.family == "conv":  # builds for 28x28 Omniglot images
            with torch.device("meta"):  # shapes only
                build_network(spec.architecture, (1, 28, 28), 5)
        else:
            check_compatible(spec, SinusoidSource())
        # rates the algorithm meta-learns start at a fixed value; fixed ones are searched
        searched = spec.outer.algorithm != "protonet" and not spec.inner.learned
        assert ("inner.lr" in params) == searched
        assert ("inner.granularity" in params) == (
            spec.outer.algorithm == "metasgd" or (name == "inner_loop" and spec.inner.learned)
        )
    algorithms = {spec.outer.algorithm for _, spec in pairs}
    expected = {
        "conv": set(registry.names()),
        "mlp": set(registry.names()) - {"protonet"},
        "inner_loop": {"maml"},
    }[name]
    assert algorithms == expected


def test_widths_are_sampled_per_layer_up_to_the_depth() -> None:
    for params, spec in sample(parse_space(SMALL), 30):
        depth = params["architecture.depth"]
        widths = [params[f"architecture.widths.{i}"] for i in range(depth)]
        assert spec.architecture.widths == tuple(widths)
        assert f"architecture.widths.{depth}" not in params


def test_a_shared_width_repeats_to_the_depth() -> None:
    space = parse_space(with_change("dimensions/architecture.widths/per_layer", False))
    for params, spec in sample(space, 20):
        assert spec.architecture.widths == (params["architecture.widths"],) * len(
            spec.architecture.widths
        )
        assert "architecture.widths.0" not in params


def test_a_fixed_width_repeats_to_a_fixed_depth() -> None:
    data = with_change("dimensions/architecture.widths", None)
    del data["dimensions"]["architecture.depth"]
    data["fixed"] |= {"architecture.depth": 3, "architecture.widths": 24}
    (_, spec), *_ = sample(parse_space(data), 1)
    assert spec.architecture.widths == (24, 24, 24)


def test_derived_values_win_and_conditions_gate_dimensions() -> None:
    for params, spec in sample(parse_space(SMALL), 40):
        if spec.outer.algorithm == "metasgd":
            assert spec.inner.learned and spec.inner.lr == 0.05 and "inner.lr" not in params
            assert params["inner.granularity"] == spec.inner.granularity
        else:
            assert not spec.inner.learned and spec.inner.lr == params["inner.lr"]
            assert "inner.granularity" not in params and spec.inner.granularity == "scalar"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("fixed/inner.rate", 0.1, ["fixed.inner.rate", "unknown field", "inner.lr"]),
        ("dimensions/outer.metalr", {"type": "float", "low": 1, "high": 2}, ["outer.meta_lr"]),
        ("dimensions/inner.lr/type", "real", ["inner.lr", "'categorical', 'int', 'float'"]),
        ("dimensions/inner.lr/low", 0.5, ["dimensions.inner.lr", "low 0.5 > high 0.1"]),
        ("dimensions/inner.lr/lows", 0.5, ["inner.lr", "lows", "unknown field"]),
        ("dimensions/inner.lr/low", 0.0, ["dimensions.inner.lr", "log scale needs low > 0"]),
        (
            "dimensions/init.gain",
            {"type": "float", "low": -1.0, "high": 1.0},
            ["dimensions.init.gain", "low: -1.0: must be > 0"],
        ),
        (
            "dimensions/architecture.kernel_size",
            {"type": "categorical", "choices": [3, 4]},
            ["architecture.kernel_size", "4", "1, 3, 5 or 7"],
        ),
        (
            "dimensions/inner.granularity/when",
            {"inner.stepz": 1},
            ["dimensions.inner.granularity.when", "unknown field 'inner.stepz'"],
        ),
        (
            "dimensions/inner.granularity/when",
            {"outer.algorithm": "mamlpp2"},
            ["when.outer.algorithm", "'mamlpp2'", "'maml', 'fomaml'"],
        ),
        (
            "dimensions/inner.granularity/when",
            {"outer.meta_lr": 0.1},
            ["outer.meta_lr is neither fixed, derived nor sampled before inner.granularity"],
        ),
        ("derived/inner.lr/from", "outer.algo", ["derived.inner.lr.from", "unknown field"]),
        (
            "derived/inner.lr/map/default",
            0.1,
            ["derived.inner.lr", "the dimension inner.lr would never be sampled"],
        ),
        ("derived/inner.learned/map/metasgd", "yes please", ["derived.inner.learned.map"]),
        ("dimensions/architecture.depth", None, ["architecture.widths", "architecture.depth"]),
        ("fixed/inner.lr", 0.1, ["inner.lr: both fixed and a dimension"]),
    ],
)
def test_malformed_spaces_name_the_field(path: str, value: Any, expected: list[str]) -> None:
    with pytest.raises(SpecError) as error:
        parse_space(with_change(path, value))
    for text in expected:
        assert text in str(error.value)


def test_a_missing_space_file_says_where(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read search space .*nowhere.yaml"):
        load_space(tmp_path / "nowhere.yaml")


def test_yaml_reads_scientific_notation_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "space.yaml"
    path.write_text("name: s\nfixed: {outer.meta_lr: 1e-3, inner.lr: 5.0E-2, inner.steps: 2}\n")
    assert read_yaml(path, "search space")["fixed"] == {
        "outer.meta_lr": 0.001,
        "inner.lr": 0.05,
        "inner.steps": 2,
    }
