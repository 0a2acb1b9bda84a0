"""The report page: the study's summary, its figures and its trials, in one HTML file that
carries plotly's script once, so that it opens offline and can be mailed as it is."""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import optuna
import plotly.graph_objects as go
import plotly.io
import plotly.offline
from optuna.trial import TrialState

from metasearch.darts.plot import architecture_weight_pngs
from metasearch.errors import MetasearchError
from metasearch.report import figures
from metasearch.report.table import trials_table
from metasearch.search.results import architecture_histories, describe_trial, objective_names
from metasearch.search.storage import FULL, unwritable

log = logging.getLogger(__name__)
FIGURE_CONFIG = {"displaylogo": False, "responsive": True}

Section = tuple[str, str, str, Callable[[optuna.Study], go.Figure]]
"""``(key, heading, what it shows, draw)``; the figure's element has id ``figure-<key>``."""
FIGURES: list[Section] = [
    (
        "curves",
        "Learning curves",
        "Each finished trial's validation score as it meta-trained, then its final score (a "
        "star; a lone star: a trial stopped before its first evaluation). Dashed: pruned. "
        "Click a trial in the legend to hide it, double-click to show it alone.",
        figures.learning_curves,
    ),
    (
        "history",
        "Optimization history",
        "The first objective of each complete trial in the order they ran, and the best so far.",
        figures.optimization_history,
    ),
    (
        "importances",
        "Parameter importances",
        "How much of the objective's variation each parameter explains (fANOVA) among the "
        "parameters every complete trial sampled.",
        figures.importances,
    ),
    (
        "parallel",
        "Parallel coordinates",
        f"The first objective against the {figures.TOP_PARAMS} most important parameters; drag "
        "along an axis to select a range.",
        figures.parallel_coordinates,
    ),
]
PARETO: Section = (
    "pareto",
    "Pareto front",
    "Every complete trial in the objectives' space; the front: trials no other beats in all.",
    figures.pareto_front,
)


def write_report(study: optuna.Study, out_dir: str | Path, title: str) -> Path:
    """Writes ``out_dir/index.html``; returns its path. Raises :class:`MetasearchError` where
    it cannot be written (a full disk)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "index.html"
        path.write_text(render(study, title), encoding="utf-8")
    except OSError as error:
        reason = unwritable(error) if error.errno in FULL else f"{error.strerror}: {error.filename}"
        raise MetasearchError(f"the report was not written: {reason}") from None
    return path


def render(study: optuna.Study, title: str) -> str:
    """The report of ``study`` as one HTML page."""
    names = objective_names(study)
    shown = ([PARETO] if len(names) > 1 else []) + FIGURES
    sections = [_figure_section(study, *figure) for figure in shown]
    sections.append(f"<h2>Trials</h2>\n{trials_table(study)}")
    sections += [
        f"<h2>Architecture weights, {html.escape(name)}</h2>"
        f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}" alt="{name}">'
        for name, png in architecture_weight_pngs(architecture_histories(study))
    ]
    counts = {
        s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState
    }
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    return _PAGE.format(
        title=html.escape(title),
        plotly=plotly.offline.get_plotlyjs(),
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary=html.escape(summary or "no trials"),
        objectives=html.escape(
            ", ".join(f"{n} ({d.name.lower()})" for n, d in zip(names, study.directions))
        ),
        best=html.escape(_best_line(study, counts["complete"] > 0)),
        sections="\n".join(sections),
    )


def _figure_section(
    study: optuna.Study,
    key: str,
    heading: str,
    about: str,
    draw: Callable[[optuna.Study], go.Figure],
) -> str:
    try:
        figure = draw(study)
    except Exception as error:  # a figure the study cannot support yet must not stop the report
        log.info("skipped figure %s: %s", key, error)
        return f"<h2>{heading}</h2><p class=note>Not available yet: {html.escape(str(error))}.</p>"
    figure.update_layout(template="plotly_white", margin={"t": 40})
    div = plotly.io.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"figure-{key}",
        config=FIGURE_CONFIG,
        default_height="460px",
    )
    return f"<h2>{heading}</h2><p class=about>{html.escape(about)}</p>\n{div}"


def _best_line(study: optuna.Study, any_complete: bool) -> str:
    if not any_complete:
        return "No completed trial yet."
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} trials on the Pareto front."
    return f"Best: {describe_trial(study.best_trial)}."


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; padding: 0 1rem;
       color: #222; }}
table {{ border-collapse: collapse; font-size: 0.85rem; width: 100%; }}
th, td {{ padding: 0.3rem 0.5rem; border-bottom: 1px solid #ddd; text-align: right;
         white-space: nowrap; vertical-align: top; }}
th:last-child, td.spec {{ text-align: left; white-space: normal; }}
td.spec b {{ font-weight: 600; color: #555; }}
img {{ max-width: 100%; }} .note, .about {{ color: #666; }}
</style>
<script>{plotly}</script>
</head><body>
<h1>{title}</h1>
<p>Written {created}. Trials: {summary}. Objectives: {objectives}.</p>
<p><strong>{best}</strong></p>
{sections}
</body></html>
"""
