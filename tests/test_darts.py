"""Differentiable architecture search: the search finds the operation a task family needs,
warm-up freezes the architecture, the search keeps the evaluator's time limits, stop requests,
checkpoints and failures, derived genotypes round-trip through specs and exports, and studies
with strategy darts store what black-box trials store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from metasearch.darts import ArchitectureSearch, DartsConfig, genotype_spec, search_architecture
from metasearch.darts.plot import architecture_weight_pngs
from metasearch.engines.grouped import GroupedEngine
from metasearch.engines.vmap import VmapEngine
from metasearch.evaluation import CheckpointStore, TrainingInterrupted
from metasearch.export import export_learner, load_learner
from metasearch.learners import build_learner
from metasearch.search import StudyConfig, run_study
from metasearch.search.results import HISTORY_ATTR, architecture_histories
from metasearch.spec import Genotype, LearnerSpec
from metasearch.tasks import TaskBatch, TaskSource

SIZE, DISTANCE = 12, 6


class PairSource(TaskSource):
    """2-way tasks on images holding one pair of dots ``DISTANCE`` apart: horizontal pairs
    against vertical ones, labels drawn afresh per task. A single dot looks the same in both
    classes, so only a receptive field spanning both dots tells them apart: after the 3x3 stem,
    the 5x5 conv (7 pixels) does, the 3x3 conv and pooling (5 pixels) and skip do not."""

    kind = "classification"
    input_shape = (1, SIZE, SIZE)
    n_outputs = 2

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> PairSource:
        return self

    def describe(self) -> dict[str, Any]:
        return {"source": "pairs"}

    def sample(self, split: str, n_tasks: int, generator: torch.Generator) -> TaskBatch:
        shots, queries = 2, 6
        n = 2 * (shots + queries)
        vertical = torch.arange(n).remainder(2).expand(n_tasks, n)  # class 0 horizontal
        a = torch.randint(0, SIZE - DISTANCE, (n_tasks, n), generator=generator)
        b = torch.randint(0, SIZE, (n_tasks, n), generator=generator)
        rows, cols = torch.where(vertical == 1, a, b), torch.where(vertical == 1, b, a)
        x = torch.zeros(n_tasks, n, 1, SIZE, SIZE)
        t, i = torch.meshgrid(torch.arange(n_tasks), torch.arange(n), indexing="ij")
        x[t, i, 0, rows, cols] = 1.0
        x[t, i, 0, rows + DISTANCE * vertical, cols + DISTANCE * (1 - vertical)] = 1.0
        flip = torch.randint(0, 2, (n_tasks, 1), generator=generator)
        y = (vertical + flip) % 2
        return TaskBatch(x[:, : 2 * shots], y[:, : 2 * shots], x[:, 2 * shots :], y[:, 2 * shots :])


def _spec(algorithm: str = "fomaml") -> LearnerSpec:
    return LearnerSpec.from_dict(
        {
            "architecture": {"head": "gap"},
            "init": {"zero_head": True},
            "inner": {"steps": 2, "lr": 1.0},
            "outer": {"algorithm": algorithm, "meta_lr": 1e-2, "meta_batch_size": 8},
        }
    )


def _tiny(**changes: Any) -> DartsConfig:
    settings = {
        "channels": 4,
        "cells": ("normal",),
        "nodes": 1,
        "operations": ("none", "skip_connect", "conv_3x3", "conv_5x5", "max_pool_3x3"),
        "history_every": 1,
    }
    return DartsConfig(**(settings | changes))


@pytest.mark.slow
def test_search_concentrates_on_the_operation_the_tasks_need() -> None:
    config = _tiny(channels=8, iterations=60, warmup=15, arch_lr=0.1, drop_prob=0.0)
    result = search_architecture(_spec(), PairSource(), config, seed=0)
    conv5 = config.operations.index("conv_5x5")
    # From 0.2 each, the 5x5 conv must take most of the weight of both edges, more than twice
    # any other operation.
    for edge in result.weights["normal"]:
        others = torch.cat([edge[:conv5], edge[conv5 + 1 :]])
        assert edge[conv5] > 0.5 and edge[conv5] > 2 * others.max(), result.weights
    assert result.genotype.normal == ((("conv_5x5", 0), ("conv_5x5", 1)),)


@pytest.mark.slow
def test_warmup_freezes_the_architecture_weights() -> None:
    config = _tiny(iterations=4, warmup=3)
    result = search_architecture(_spec("maml"), PairSource(), config, seed=1)
    history = result.history
    assert history["iterations"] == [0, 1, 2, 3, 4]
    frozen = history["normal"][:4]
    assert all(table == frozen[0] for table in frozen)
    assert history["normal"][4] != frozen[0]
    assert json.loads(json.dumps(history)) == history


def test_a_time_limit_ends_the_search_within_one_iteration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    costs: list[float] = []
    apply = ArchitectureSearch.apply

    def measured(search: ArchitectureSearch, *args: Any) -> bool:
        ended = apply(search, *args)
        costs.append(search.costs[-1])
        return ended

    monkeypatch.setattr(ArchitectureSearch, "apply", measured)
    config = _tiny(iterations=10_000, warmup=0, time_limit=0.5)
    result = search_architecture(_spec(), PairSource(), config)
    assert result.status == "complete" and result.genotype is not None, result.reason
    assert result.iterations == len(costs) < config.iterations
    assert result.seconds <= 0.5 + max(costs)
    assert result.history["iterations"][-1] == result.iterations


def test_a_search_too_short_for_its_warmup_is_pruned() -> None:
    result = search_architecture(_spec(), PairSource(), _tiny(warmup=3, time_limit=1e-6))
    assert result.status == "pruned" and result.genotype is None
    assert result.reason is not None and result.reason.startswith("too slow for its budget")
    assert result.iterations == 1


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fomaml", "reptile"])
def test_an_interrupted_search_resumes_exactly(algorithm: str, tmp_path: Path) -> None:
    config = _tiny(iterations=6, warmup=2, history_every=2)
    whole = search_architecture(_spec(algorithm), PairSource(), config, seed=2)
    store = CheckpointStore(tmp_path / "search", every=100)
    stops = iter([False, False, True])  # asked after each meta-iteration
    with pytest.raises(TrainingInterrupted, match="meta-iteration 3"):
        search_architecture(
            _spec(algorithm), PairSource(), config, 2, checkpoints=store, stop=lambda: next(stops)
        )
    resumed = search_architecture(_spec(algorithm), PairSource(), config, seed=2, checkpoints=store)
    assert resumed.status == "complete" and resumed.genotype == whole.genotype
    torch.testing.assert_close(resumed.learner.alphas(), whole.learner.alphas(), rtol=0, atol=0)
    assert resumed.history.pop("seconds") >= 0 and whole.history.pop("seconds") >= 0
    assert resumed.history == whole.history
    assert resumed.history["iterations"] == [0, 2, 4, 6]


def test_a_diverging_search_fails_with_a_reason() -> None:
    spec = _spec().model_copy(update={"outer": _spec().outer.model_copy(update={"meta_lr": 1e6})})
    result = search_architecture(spec, PairSource(), _tiny(iterations=3, warmup=1))
    assert result.status == "failed" and result.genotype is None
    assert result.reason is not None and result.reason.startswith("diverged")


def test_a_search_out_of_memory_fails_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*args: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    for engine in (VmapEngine, GroupedEngine):
        monkeypatch.setattr(engine, "meta_gradients", out_of_memory)
    result = search_architecture(_spec(), PairSource(), _tiny(iterations=3, warmup=1))
    assert result.status == "failed" and result.genotype is None
    assert result.reason is not None and "out of device memory" in result.reason
    assert result.learner.supernet.keep is None


def _pair_study(tmp_path: Path, **darts: Any) -> StudyConfig:
    """A study of darts trials on :class:`PairSource` tasks, kept in SQLite under ``tmp_path``."""
    settings = {"iterations": 3, "warmup": 1, "channels": 4, "nodes": 1, "cells": ["normal"]}
    return StudyConfig.from_dict(
        {
            "name": "pairs",
            "task": {"source": "omniglot"},  # recorded only: the tests pass the source
            "space": {
                "name": "hyper",
                "fixed": {"outer.algorithm": "fomaml", "architecture.head": "gap"},
                "dimensions": {"inner.lr": {"type": "float", "low": 0.1, "high": 0.5}},
            },
            "budget": {"iterations": 2, "eval_tasks": 4},
            "strategy": "darts",
            "darts": settings | {"history_every": 1} | darts,
            "storage": f"sqlite:///{tmp_path / 'pairs.db'}",
            "device": "cpu",
        }
    )


@pytest.mark.slow
def test_a_search_too_short_for_its_warmup_prunes_its_trial(tmp_path: Path) -> None:
    study = run_study(_pair_study(tmp_path, time_limit=1e-6), n_trials=1, source=PairSource())
    (trial,) = study.get_trials()
    assert trial.state.name == "PRUNED"
    assert trial.user_attrs["result"]["reason"].startswith("too slow for its budget")


@pytest.mark.slow
def test_a_stopped_search_resumes_in_its_retried_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = _pair_study(tmp_path, iterations=4)  # checkpoints every 100 iterations
    stops = iter([False, False, False, True])  # the run asks once, then after each iteration
    run_study(config, n_trials=1, source=PairSource(), stop=lambda: next(stops, False))
    (saved,) = tmp_path.glob("pairs.weights/pairs/*/checkpoints/trial-0/search/state.safetensors")
    with caplog.at_level("INFO", logger="metasearch.evaluation.evaluator"):
        study = run_study(config, n_trials=1, source=PairSource())
    assert "resumed from the checkpoint of meta-iteration 3" in caplog.text
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 1 and done[0].user_attrs[HISTORY_ATTR]["iterations"] == [0, 1, 2, 3, 4]
    assert not saved.exists()


GENOTYPE = {
    "normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["dil_conv_3x3", 2], ["conv_5x5", 0]]],
    "reduce": [[["max_pool_3x3", 0], ["avg_pool_3x3", 1]], [["conv_3x3", 2], ["skip_connect", 1]]],
    "layout": ["reduce", "normal", "reduce"],
}


def test_genotype_round_trips_through_spec_and_export(tmp_path: Path) -> None:
    spec = genotype_spec(_spec(), Genotype.model_validate(GENOTYPE), channels=4)
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["architecture"]["genotype"] == GENOTYPE
    assert LearnerSpec.from_dict(data) == spec
    assert "genotype" not in _spec().to_dict()["architecture"]  # other families unchanged

    source = PairSource()
    learner = build_learner(spec, source.input_shape, 2, "classification", seed=3)
    export_learner(learner, tmp_path / "cells", input_shape=source.input_shape)
    loaded = load_learner(tmp_path / "cells")
    assert loaded.spec == spec
    x = source.sample("test", 1, torch.Generator().manual_seed(0)).query_x[0]
    with torch.no_grad():
        expected = learner.forward(learner.params, x)
        assert torch.equal(loaded.learner.forward(loaded.learner.params, x), expected)


@pytest.mark.parametrize(
    "change, hint",
    [
        ({"normal": [[["none", 0]]]}, "zero operation"),
        ({"normal": [[["conv_3x3", 2]]]}, "inputs 0 to 1"),
        ({"reduce": [[["conv_3x3", 0], ["conv_5x5", 0]]]}, "another input"),
    ],
)
def test_bad_genotypes_are_refused(change: dict, hint: str) -> None:
    architecture = {"family": "cells", "widths": [4], "genotype": GENOTYPE | change}
    with pytest.raises(ValueError, match=hint):
        LearnerSpec.from_dict({"architecture": architecture})


def test_darts_study_stores_spec_result_and_history(data_root: Path, tmp_path: Path) -> None:
    config = StudyConfig.from_dict(
        {
            "name": "darts",
            "task": {"source": "omniglot", "query_shots": 1, "image_size": 14},
            "space": {
                "name": "hyper",
                "fixed": {
                    "outer.algorithm": "fomaml",
                    "architecture.head": "gap",
                    "outer.meta_batch_size": 2,
                },
                "dimensions": {
                    "inner.lr": {"type": "float", "low": 0.1, "high": 0.5, "log": True},
                    "outer.meta_lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                },
            },
            "budget": {"iterations": 2, "eval_tasks": 4},
            "strategy": "darts",
            "darts": {
                "iterations": 3,
                "warmup": 1,
                "channels": 4,
                "nodes": 1,
                "cells": ["reduce"],
                "history_every": 1,
            },
            "device": "cpu",
        }
    )
    study = run_study(config, n_trials=2, data_root=data_root)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for trial in trials:
        spec = LearnerSpec.from_dict(trial.user_attrs["spec"])
        assert spec.architecture.family == "cells" and spec.outer.iterations == 2
        assert trial.user_attrs["result"]["status"] == "complete"
        assert trial.user_attrs["architecture_weights"]["iterations"] == [0, 1, 2, 3]
    pngs = architecture_weight_pngs(architecture_histories(study))
    best = min(trials, key=lambda t: t.value).number
    assert [title for title, _ in pngs][:2] == [
        f"trial {best}: normal cell",
        f"trial {best}: reduce cell",
    ]
    assert len(pngs) == 4 and all(png.startswith(b"\x89PNG") for _, png in pngs)
