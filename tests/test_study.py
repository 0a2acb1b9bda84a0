"""Study files: the shipped ones load; malformed ones say which field is wrong and what fits."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from PIL import Image

from metasearch import DataError, SinusoidSource, SpecError
from metasearch.search import (
    StudyConfig,
    build_source,
    load_study_file,
    make_pruner,
    make_sampler,
    resolve_device,
)

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))

STUDY: dict[str, Any] = {
    "name": "tiny",
    "task": {"source": "sinusoid", "shots": 5, "query_points": 5},
    "space": "../search_spaces/mlp.yaml",
    "pruner": {"name": "median"},
    "budget": {"iterations": 20, "eval_every": 10, "eval_tasks": 10},
    "trials": 3,
}


def write(tmp_path: Path, data: dict[str, Any], name: str = "study.yaml") -> Path:
    folder = tmp_path / "studies"
    folder.mkdir(exist_ok=True)
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "mlp.yaml").write_text(
        (ROOT / "search_spaces" / "mlp.yaml").read_text()
    )
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def first_draw(sampler: optuna.samplers.BaseSampler) -> float:
    return optuna.create_study(sampler=sampler).ask().suggest_float("x", 0, 1)


def changed(**fields: Any) -> dict[str, Any]:
    return copy.deepcopy(STUDY) | fields


@pytest.mark.slow
@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_shipped_study_files_load(path: Path) -> None:
    config = load_study_file(path)
    assert config.storage == f"sqlite:///{path.with_suffix('.db')}"
    assert config.file_sha256 and config.path == path
    assert config.sampler is not None
    assert config.space.dimensions or config.strategy == "darts"  # darts may fix the rest
    make_pruner(config)
    if config.sampler.name not in ("cmaes",):
        make_sampler(config)


def test_the_shipped_pareto_study_has_two_objectives_and_no_pruner() -> None:
    config = load_study_file(ROOT / "studies" / "sinusoid_pareto.yaml")
    assert config.objectives == ("query_loss", "n_parameters") and config.multi_objective
    assert config.pruner.name == "none"


def test_storage_defaults_to_sqlite_beside_the_file_and_space_paths_are_relative(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, STUDY, "my study.yaml")
    config = load_study_file(path)
    assert config.storage == f"sqlite:///{tmp_path / 'studies' / 'my study.db'}"
    assert config.space.name == "mlp"
    assert config.sampler is not None and config.sampler.name == "tpe"


def test_defaults_for_several_objectives() -> None:
    config = StudyConfig.from_dict(
        changed(objectives=["query_loss", "n_parameters"], pruner={"name": "none"}),
        base_dir=ROOT / "studies",
    )
    assert config.sampler is not None and config.sampler.name == "nsga2"
    assert config.storage is None  # not from a file: run in memory unless told


def test_an_inline_space_works() -> None:
    space = {"name": "inline", "fixed": {"architecture.family": "mlp"}}
    config = StudyConfig.from_dict(changed(space=space))
    assert config.space.fixed == {"architecture.family": "mlp"}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"trails": 3}, ["trails: unknown field"]),
        ({"task": {"source": "mnist"}}, ["task", "'sinusoid', 'omniglot', 'image_folder'"]),
        (
            {"task": {"source": "sinusoid", "ways": 5}},
            [
                "task.sinusoid: unknown option ways for source sinusoid; "
                "allowed: shots, query_points"
            ],
        ),
        (
            {"task": {"source": "image_folder", "root": "x", "classes_from": "alphabet"}},
            ["task.image_folder.classes_from", "'any' or 'group'"],
        ),
        ({"objectives": ["accuracy"]}, ["objectives", "first objective must be query_loss"]),
        ({"objectives": ["query_loss", "speed"]}, ["objectives.1", "'adaptation_seconds'"]),
        ({"objectives": ["query_loss", "accuracy"], "pruner": {"name": "none"}}, ["regression"]),
        (
            {"objectives": ["query_loss", "n_parameters"]},
            ["pruner", "cannot prune multi-objective studies"],
        ),
        ({"budget": {"iterations": 20}}, ["pruner", "set budget.eval_every"]),
        ({"budget": {"eval_tasks": 1}}, ["budget.eval_tasks", "greater than or equal to 2"]),
        ({"sampler": {"name": "annealing"}}, ["sampler.name", "'tpe', 'cmaes', 'random'"]),
        (
            {"sampler": {"name": "tpe", "options": {"startup": 3}}},
            ["sampler.options", "unknown option startup", "n_startup_trials"],
        ),
        ({"pruner": {"name": "median", "options": {"patience": 3}}}, ["n_warmup_steps"]),
        ({"device": "gpu"}, ["device", "auto, cpu, cuda or cuda:N"]),
        ({"space": "../search_spaces/nowhere.yaml"}, ["space", "cannot read", "nowhere.yaml"]),
        (
            {"space": {"name": "s", "fixed": {"inner.rate": 0.1}}},
            ["space", "fixed.inner.rate: unknown field", "inner.lr"],
        ),
    ],
)
def test_malformed_study_files_name_the_field(
    tmp_path: Path, fields: dict[str, Any], expected: list[str]
) -> None:
    with pytest.raises(SpecError) as error:
        load_study_file(write(tmp_path, changed(**fields)))
    assert "study.yaml" in str(error.value)
    for text in expected:
        assert text in str(error.value)


def test_a_study_file_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name: x\n")
    with pytest.raises(SpecError, match="must hold a mapping"):
        load_study_file(path)


def test_build_source_makes_the_task_source(tmp_path: Path) -> None:
    source = build_source(StudyConfig.from_dict(STUDY, base_dir=ROOT / "studies"), device="cpu")
    assert isinstance(source, SinusoidSource) and source.shots == 5
    omniglot = changed(task={"source": "omniglot", "ways": 5})
    with pytest.raises(DataError, match="METASEARCH_DATA"):
        build_source(StudyConfig.from_dict(omniglot, base_dir=ROOT / "studies"), tmp_path)


def test_an_image_folder_root_is_read_under_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METASEARCH_CACHE", str(tmp_path / "cache"))
    for c in range(12):
        folder = tmp_path / "data" / "shapes" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(3):
            Image.new("L", (10, 10), color=c * 20 + i).save(folder / f"{i}.png")
    task = {"source": "image_folder", "root": "shapes", "ways": 2, "query_shots": 2, "mode": "L"}
    config = StudyConfig.from_dict(changed(task=task), base_dir=ROOT / "studies")
    source = build_source(config, data_root=tmp_path / "data", device="cpu")
    assert source.input_shape == (1, 28, 28) and source.n_outputs == 2


def test_grouped_image_folders_draw_classes_from_one_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METASEARCH_CACHE", str(tmp_path / "cache"))
    for g in range(3):
        for c in range(8):
            folder = tmp_path / "data" / "scripts" / f"script{g}" / f"letter{c}"
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("L", (10, 10), color=g * 80 + c * 9 + i).save(folder / f"{i}.png")
    task = {"source": "image_folder", "root": "scripts", "ways": 2, "query_shots": 2}
    plain = StudyConfig.from_dict(changed(task=task), base_dir=ROOT / "studies")
    assert "classes_from" not in plain.task.model_dump(mode="json")  # as studies made before it
    grouped = changed(task=task | {"classes_from": "group", "mode": "L"})
    config = StudyConfig.from_dict(grouped, base_dir=ROOT / "studies")
    assert config.task.model_dump(mode="json")["classes_from"] == "group"
    source = build_source(config, data_root=tmp_path / "data", device="cpu")
    assert source.describe()["classes_from"] == "group"
    assert source.class_groups.tolist() == [g for g in range(3) for _ in range(8)]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_asking_for_cuda_without_it_says_so() -> None:
    assert resolve_device("auto") == "cpu"
    with pytest.raises(SpecError, match="CUDA, which is not available"):
        resolve_device("cuda:0")


def test_sampler_and_pruner_follow_the_study() -> None:
    config = StudyConfig.from_dict(
        changed(sampler={"name": "random", "seed": 7}, pruner={"name": "hyperband"}),
        base_dir=ROOT / "studies",
    )
    sampler = make_sampler(config, seed_offset=3)
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    assert first_draw(sampler) == first_draw(optuna.samplers.RandomSampler(seed=10))
    pruner = make_pruner(config.model_copy(update={"trials": 16}))  # 2 brackets, 8 trials each
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._min_resource == 10 and pruner._max_resource == 20  # eval_every, iterations


def test_a_study_too_small_for_hyperband_halves_in_one_bracket() -> None:
    config = StudyConfig.from_dict(
        changed(
            pruner={"name": "hyperband"},
            budget={"unit": "seconds", "time_limit": 90, "eval_every": 10, "eval_tasks": 10},
            trials=12,
        ),
        base_dir=ROOT / "studies",
    )
    pruner = make_pruner(config)  # rungs at 10, 30, 90 s: 3 brackets would need 24 trials
    assert isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner)
    assert pruner._min_resource == 10 and pruner._reduction_factor == 3
    explicit = config.model_copy(
        update={"pruner": config.pruner.model_copy(update={"options": {"min_resource": 5}})}
    )
    assert isinstance(make_pruner(explicit), optuna.pruners.HyperbandPruner)


def test_tpe_start_up_trials_follow_the_study_size() -> None:
    config = StudyConfig.from_dict(changed(sampler={"name": "tpe"}), base_dir=ROOT / "studies")
    sizes = {
        trials: make_sampler(config.model_copy(update={"trials": trials}))._n_startup_trials
        for trials in (3, 12, 40, 200)
    }
    assert sizes == {3: 1, 12: 3, 40: 10, 200: 10}
    explicit = changed(sampler={"name": "tpe", "options": {"n_startup_trials": 7}})
    sampler = make_sampler(StudyConfig.from_dict(explicit, base_dir=ROOT / "studies"))
    assert sampler._n_startup_trials == 7
