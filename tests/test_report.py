"""The report: what its figures and table hold (on studies built by hand), and that every figure
draws in a real browser (headless Chromium) on studies that really ran."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import write_tiny_study
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from metasearch.report import figures, write_report
from metasearch.report.page import render
from metasearch.report.table import trials_table
from metasearch.search import load_study_file, run_study
from metasearch.search.results import HISTORY_ATTR

LR = {"inner.lr": FloatDistribution(1e-3, 0.1, log=True)}


def hand_made(
    trials: list[dict[str, Any]],
    objectives: tuple[str, ...] = ("query_loss",),
    unit: str = "iterations",
) -> optuna.Study:
    """A study as metasearch records one, with ``trials`` given as keyword sets for
    :func:`optuna.trial.create_trial` plus ``result`` (the evaluation record)."""
    study = optuna.create_study(directions=["minimize"] * len(objectives))
    study.set_user_attr("objectives", list(objectives))
    study.set_user_attr("budget", {"unit": unit})
    for fields in trials:
        fields = {"params": {"inner.lr": 0.01}, "distributions": LR} | fields
        result = {"status": "complete", "iterations": 30, "curve": []} | fields.pop("result", {})
        user_attrs = {"result": result} | fields.pop("user_attrs", {})
        state = fields.pop("state", TrialState.COMPLETE)
        study.add_trial(create_trial(state=state, user_attrs=user_attrs, **fields))
    return study


def curve_of(figure: Any, name: str) -> list[tuple[float, float, str]]:
    (trace,) = [t for t in figure.data if t.name == name]
    return list(zip(trace.x, trace.y, trace.marker.symbol))


def test_learning_curves_end_with_each_final_score_and_keep_trials_without_evaluations() -> None:
    study = hand_made(
        [
            {
                "value": 0.7,
                "intermediate_values": {10: 1.0, 20: 0.8},
                "result": {"query_loss": 0.7, "iterations": 25},
            },
            {"value": 0.5, "result": {"query_loss": 0.5, "iterations": 8}},  # cut by its time limit
            {
                "state": TrialState.PRUNED,
                "intermediate_values": {10: 2.0},
                "result": {"status": "pruned", "query_loss": 1.9, "iterations": 10},
            },
        ]
    )
    figure = figures.learning_curves(study)
    assert curve_of(figure, "trial 0") == [
        (10, 1.0, "circle"),
        (20, 0.8, "circle"),
        (25, 0.7, "star"),
    ]
    assert curve_of(figure, "trial 1") == [(8, 0.5, "star")]
    assert curve_of(figure, "trial 2 (pruned)") == [(10, 2.0, "circle"), (10, 1.9, "star")]
    assert figure.layout.xaxis.title.text == "meta-iterations"


def test_learning_curves_count_in_the_budgets_unit_from_the_curve_without_reports() -> None:
    """Multi-objective trials report nothing to Optuna; their curve counts meta-iterations."""
    study = hand_made(
        [
            {
                "values": [0.4, 41],
                "result": {
                    "query_loss": 0.4,
                    "iterations": 20,
                    "examples": 2000.0,
                    "curve": [[10, 0.9]],
                },
            }
        ],
        objectives=("query_loss", "n_parameters"),
        unit="examples",
    )
    figure = figures.learning_curves(study)
    assert curve_of(figure, "trial 0") == [(1000.0, 0.9, "circle"), (2000.0, 0.4, "star")]
    assert figure.layout.xaxis.title.text == "meta-training examples"


def test_the_table_has_no_accuracy_for_regression_and_fits_in_a_few_columns() -> None:
    spec = {"outer": {"algorithm": "maml", "meta_lr": 0.001}, "architecture": {"depth": 2}}
    regression = hand_made(
        [
            {"value": v, "result": {"query_loss": v, "accuracy": None, "n_parameters": 41}}
            | {"user_attrs": {"spec": spec | {"inner": {"lr": v}}}}
            for v in (0.3, 0.2)
        ]
    )
    table = trials_table(regression)
    headings = table.split("<thead>")[1].split("</thead>")[0]
    assert "accuracy" not in headings and "query_loss" in headings
    assert headings.count("<th>") <= 8
    assert "Shared by all trials: algorithm=maml, meta_lr=0.001, depth=2." in table
    assert table.index("#1") < table.index("#0")  # best first
    assert "<b>inner.lr</b>=0.2" in table

    classification = hand_made(
        [{"value": 0.3, "result": {"query_loss": 0.3, "accuracy": 0.8, "accuracy_ci95": 0.01}}]
    )
    assert "<th>accuracy</th>" in trials_table(classification)
    assert "80.00% ± 1.00%" in trials_table(classification)


@pytest.mark.slow
def test_parallel_coordinates_show_only_the_most_important_parameters() -> None:
    rng = np.random.default_rng(0)
    names = [f"init.p{i}" for i in range(10)]
    trials = []
    for _ in range(20):
        params = {n: float(rng.uniform(0, 1)) for n in names}
        value = 5 * params["init.p3"] + 2 * params["init.p7"] + 0.01 * rng.normal()
        distributions = {n: FloatDistribution(0, 1) for n in names}
        trials.append({"value": value, "params": params, "distributions": distributions})
    study = hand_made(trials)
    top = figures.top_params(study)
    assert len(top) == figures.TOP_PARAMS and top[:2] == ["init.p3", "init.p7"]
    axes = figures.parallel_coordinates(study).layout.xaxis.ticktext
    assert list(axes) == ["query_loss", *sorted(top)]


@pytest.mark.slow
def test_too_few_trials_get_a_note_and_darts_weights_are_embedded() -> None:
    history = {
        "edges": ["0->2", "1->2"],
        "operations": ["skip", "conv_3x3"],
        "iterations": [0, 1],
        "normal": [[[0.5, 0.5], [0.5, 0.5]], [[0.4, 0.6], [0.7, 0.3]]],
        "reduce": [[[0.5, 0.5], [0.5, 0.5]], [[0.6, 0.4], [0.2, 0.8]]],
    }
    study = hand_made([{"value": 0.5, "user_attrs": {HISTORY_ATTR: history}}, {"value": 0.6}])
    page = render(study, "tiny")
    assert (
        "Not available yet: parameter importances need 5 complete trials; the study has 2" in page
    )
    assert "<h2>Architecture weights, trial 0: normal cell</h2>" in page
    assert page.count('<img src="data:image/png;base64,') == 2
    assert "<script src=" not in page  # plotly's script is inlined: the page opens offline


# --- in a browser ------------------------------------------------------------------------------


class Figures(HTMLParser):
    """Counts the elements (``tag.class``) inside each ``figure-*`` element of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, Counter[str]] = {}
        self.current: str | None = None
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "div" and self.current:
            self.depth += 1
        elif tag == "div" and (named.get("id") or "").startswith("figure-"):
            self.current, self.depth = str(named["id"]), 1
            self.found[self.current] = Counter()
        if self.current:
            self.found[self.current].update(
                f"{tag}.{c}" for c in (named.get("class") or "").split()
            )

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self.current:
            self.depth -= 1
            self.current = None if self.depth == 0 else self.current


def drawn(page: Path) -> dict[str, Counter[str]]:
    """The elements of each figure once headless Chromium ran the page's scripts."""
    browser = next(
        (
            shutil.which(b)
            for b in ("chromium", "chromium-browser", "google-chrome")
            if shutil.which(b)
        ),
        None,
    )
    if browser is None:
        pytest.skip("no Chromium binary here (apt-get install chromium; .ci/run installs it)")
    dom = subprocess.run(
        [
            browser,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--virtual-time-budget=20000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    parser = Figures()
    parser.feed(dom)
    return parser.found


def assert_drew(found: dict[str, Counter[str]], traces: dict[str, int]) -> None:
    """Each figure in ``traces`` drew its plot with at least that many traces."""
    assert set(found) == {f"figure-{key}" for key in traces}, found.keys()
    for key, n in traces.items():
        elements = found[f"figure-{key}"]
        assert elements["div.plot-container"] == 1 and elements["svg.main-svg"] >= 1, key
        assert elements["g.trace"] >= n, (key, elements)


@pytest.fixture(scope="module")
def sinusoid_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seven tiny sinusoid trials scored every 10 of 30 meta-iterations; a median pruner
    stops weak ones after the fifth."""
    dimensions = {
        "inner.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        "outer.meta_lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "init.gain": {"type": "float", "low": 0.5, "high": 2.0},
        "architecture.activation": {"type": "categorical", "choices": ["relu", "tanh"]},
    }
    path = write_tiny_study(
        tmp_path_factory.mktemp("sinusoid"),
        dimensions=dimensions,
        budget={"iterations": 30, "eval_every": 10, "eval_tasks": 10},
        pruner={"name": "median", "options": {"n_startup_trials": 5}},
        trials=7,
    )
    run_study(load_study_file(path))
    return path


@pytest.mark.slow
def test_every_figure_of_a_sinusoid_study_draws_in_a_browser(
    sinusoid_study: Path, tmp_path: Path
) -> None:
    config = load_study_file(sinusoid_study)
    study = optuna.load_study(study_name=config.name, storage=config.storage)
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    page = write_report(study, tmp_path, "sinusoid")
    found = drawn(page)
    assert_drew(found, {"curves": len(finished), "history": 2, "importances": 1, "parallel": 1})
    assert found["figure-curves"]["g.trace"] == len(finished)  # one line per finished trial


@pytest.mark.slow
def test_every_figure_of_a_multi_objective_study_draws_in_a_browser(tmp_path: Path) -> None:
    path = write_tiny_study(
        tmp_path,
        objectives=["query_loss", "adaptation_seconds"],
        sampler={"name": "nsga2", "seed": 0, "options": {"population_size": 4}},
        budget={"iterations": 10, "eval_tasks": 10},
        trials=5,
    )
    study = run_study(load_study_file(path))
    found = drawn(write_report(study, tmp_path / "report", "pareto"))
    assert_drew(found, {"pareto": 1, "curves": 5, "history": 1, "importances": 2, "parallel": 1})
