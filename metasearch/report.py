"""A static HTML report of a study: the best trials and plots, one PNG each.

Plots: optimization history, parameter importances, parallel coordinates, the Pareto front
(several objectives) and the validation learning curves of the best trials. A plot that the
study cannot support yet (too few trials) is replaced by a note saying why.
"""

from __future__ import annotations

import html
import logging
import warnings
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from metasearch.darts.plot import plot_architecture_weights  # noqa: E402
from metasearch.errors import MetasearchError  # noqa: E402
from metasearch.search.results import (  # noqa: E402
    best_trials,
    describe_trial,
    objective_names,
    trials_frame,
)
from metasearch.search.storage import FULL, unwritable  # noqa: E402

log = logging.getLogger(__name__)
CURVES_SHOWN = 8


def write_report(study: optuna.Study, out_dir: str | Path, title: str) -> Path:
    """Writes ``out_dir/index.html`` and its PNG plots; returns the HTML file's path. Raises
    :class:`MetasearchError` where a file cannot be written (a full disk): no report goes
    without the plots it shows."""
    try:
        return _write(study, Path(out_dir), title)
    except OSError as error:
        reason = unwritable(error) if error.errno in FULL else f"{error.strerror}: {error.filename}"
        raise MetasearchError(f"the report was not written: {reason}") from None


def _write(study: optuna.Study, out: Path, title: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    names = objective_names(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    first = names[0]
    target = {"target": lambda t: t.values[0], "target_name": first} if len(names) > 1 else {}
    plots: list[tuple[str, str, Callable[[], object]]] = [
        (
            "history",
            "Optimization history",
            lambda: optuna_plots.plot_optimization_history(study, **target),
        ),
        (
            "importances",
            "Parameter importances",
            lambda: optuna_plots.plot_param_importances(study, **target),
        ),
        (
            "parallel",
            "Parallel coordinates",
            lambda: optuna_plots.plot_parallel_coordinate(study, **target),
        ),
        ("curves", "Learning curves (validation query loss)", lambda: _learning_curves(study)),
    ]
    if len(names) > 1:
        plots.insert(
            0,
            (
                "pareto",
                "Pareto front",
                lambda: optuna_plots.plot_pareto_front(study, target_names=names),
            ),
        )
    sections = [_plot_section(out, key, heading, draw) for key, heading, draw in plots]
    sections += [  # studies with strategy darts: the architecture weights of each search
        f'<h2>Architecture weights, {html.escape(path.stem)}</h2><img src="{path.name}" alt="">'
        for path in plot_architecture_weights(study, out)
    ]
    frame = trials_frame(study).head(20)
    counts = {
        s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState
    }
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    page = _PAGE.format(
        title=html.escape(title),
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=html.escape(summary or "no trials"),
        objectives=html.escape(
            ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))
        ),
        best=_best_line(study, bool(complete)),
        table=frame.to_html(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}", border=0),
        sections="\n".join(sections),
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _plot_section(out: Path, key: str, heading: str, draw: Callable[[], object]) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            drawn = draw()
        figure = drawn.figure if hasattr(drawn, "figure") else drawn
        if figure is None:
            raise ValueError("not enough completed trials")
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(out / f"{key}.png", dpi=110)
        plt.close("all")
    except OSError:
        plt.close("all")
        raise  # the plot was drawn but not written: the report fails
    except Exception as error:  # a plot the study cannot support yet must not stop the report
        plt.close("all")
        log.info("skipped plot %s: %s", key, error)
        return f"<h2>{heading}</h2><p class=note>Not available yet: {html.escape(str(error))}</p>"
    return f'<h2>{heading}</h2><img src="{key}.png" alt="{heading}">'


def _learning_curves(study: optuna.Study) -> plt.Figure | None:
    trials = [
        t for t in best_trials(study, CURVES_SHOWN) if t.user_attrs.get("result", {}).get("curve")
    ]
    if not trials:
        raise ValueError("no trial recorded intermediate scores; set budget.eval_every")
    figure, axes = plt.subplots()
    for trial in trials:
        steps, losses = zip(*trial.user_attrs["result"]["curve"])
        axes.plot(steps, losses, marker="o", label=f"trial {trial.number}")
    axes.set_xlabel("meta-iteration")
    axes.set_ylabel("validation query loss")
    axes.set_yscale("log")
    axes.legend()
    return figure


def _best_line(study: optuna.Study, any_complete: bool) -> str:
    if not any_complete:
        return "No completed trial yet."
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} trials on the Pareto front."
    return f"Best: {describe_trial(study.best_trial)}."


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.8rem; display: block; overflow-x: auto; }}
th, td {{ padding: 0.25rem 0.5rem; border-bottom: 1px solid #ddd; text-align: right; }}
img {{ max-width: 100%; }} .note {{ color: #777; }}
</style></head><body>
<h1>{title}</h1>
<p>Written {created}. Trials: {summary}. Objectives: {objectives}.</p>
<p><strong>{best}</strong></p>
<h2>Best trials</h2>
{table}
{sections}
</body></html>
"""
